"""Benchmark a serving pattern against its floors: `make bench P=<pattern dir>` (see run.py)."""
