"""Benchmarks: plain programs that start Herald for real and print figures (not pytest tests)."""
