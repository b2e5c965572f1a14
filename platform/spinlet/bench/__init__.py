"""Benchmarks: measured by `spinlet bench`, never asserted in the test suite."""
