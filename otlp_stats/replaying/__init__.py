"""Replaying: history from files and stdin (Collector file exporter output, JSON frames) fed to
the same scanners, aggregator, reporter and store as serving, in event time.

May import counting, patterns (JSON lines' messages masked), receiving (OTLP/JSON and
decompression), reporting and store.
"""
