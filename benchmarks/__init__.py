"""Benchmark scripts: the peer users would write, and load generators."""
