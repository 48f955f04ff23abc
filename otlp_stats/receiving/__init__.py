"""Receiving: the front doors. OTLP/gRPC and OTLP/HTTP, intake (admission into the queue),
decompression, OTLP/JSON, TLS and bearer tokens; errors become gRPC/HTTP statuses here, once.

May import: counting (it hands requests to the queue), patterns and the top modules (config,
errors, clock, telemetry, health). Must not import: reporting, store, operating, cli, service.
"""
