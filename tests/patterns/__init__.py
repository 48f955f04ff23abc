"""Tests of the patterns stage and `otlp-stats pattern`."""
