"""Tests of otlp_stats/operating/: the gRPC health service (the admin port is tested end to end)."""
