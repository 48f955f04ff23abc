"""Tests of otlp_stats/store/: memory, SQLite, Redis, rollups, replicas, the query command."""
