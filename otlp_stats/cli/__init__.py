"""The command line: `otlp-stats` (serving) and `otlp-stats query`."""
