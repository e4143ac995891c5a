"""Persistent state in tinydb, written crash-safely."""
