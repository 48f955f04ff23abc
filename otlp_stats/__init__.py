"""otlp-stats: count distinct log messages per attribute value in tumbling windows."""

__version__ = "0.1.0"
