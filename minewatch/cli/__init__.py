"""Command-line edge: one module per command, each a thin wrapper over library functions."""
