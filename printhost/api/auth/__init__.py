"""Authentication: backends (where users come from), password hashing, tokens and
their keys, the request guard, login throttling, and `AuthService` (core.py), which
ties them together for the routes. docs/security.md describes the design."""
