"""Benchmarks: each script prints a table and, with --json PATH, writes the same figures."""
