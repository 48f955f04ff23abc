"""Tests of otlp_stats/reporting/."""
