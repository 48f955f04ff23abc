"""Benchmark harness: decode floor, baseline server and the service, measured in one run."""
