"""Counting: the bounded queue, the workers, the scanners (C in _wire.c, Python in scan.py),
value rendering, message identity, sketches, and the aggregator, the one owner of the counts.

May import: patterns (the masker the scanners run, the pattern tables the aggregator keeps: pure)
and the top modules (config, errors, clock, telemetry, health). Must not import: receiving,
reporting, store, operating, cli, service. The aggregator and what it imports do no
I/O at all: no asyncio, sockets, files, logging, metrics or clock.
"""
