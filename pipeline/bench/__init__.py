"""Benchmark commands that print numbers: they import the library, never the CLI."""
