"""The side-by-side benchmark harness (issue 7): see tests/benchmarks/run.py."""
