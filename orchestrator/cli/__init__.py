"""The `reimage` command and its sub-commands."""
