"""Counting: the queue, the workers, the scanners, value rendering, sketches, the aggregator."""
