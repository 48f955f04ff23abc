"""Tests of otlp_stats/receiving/: the front doors, intake, decompression, OTLP/JSON, TLS, auth."""
