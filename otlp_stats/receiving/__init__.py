"""Receiving: the front doors (OTLP/gRPC, OTLP/HTTP), intake, decompression, TLS, auth."""
