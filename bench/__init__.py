"""Benchmark harness: load generators, reference servers and the driver (`python -m bench.run`)."""
