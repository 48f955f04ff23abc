"""Tests of otlp_stats/counting/: queue, workers, scanners, values, messages, aggregator."""
