"""`python -m printhost` is the same as the `printhost` command."""

from printhost.cli import main

raise SystemExit(main())
