"""Entrypoints that `ray job submit` runs."""
