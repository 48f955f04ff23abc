"""Tests of otlp_stats/cli/: the command line and the process set-up."""
