"""`roomscribe bench`: reproducible latency, accuracy, cost and concurrency measurements (see docs/benchmarks.md)."""
