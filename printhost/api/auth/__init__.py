"""Authentication: password hashing, tokens, roles and login throttling."""
