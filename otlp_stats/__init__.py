"""otlp-stats: count distinct log messages per attribute value in tumbling windows.

The folders are the stages: receiving -> counting -> reporting, beside store and operating;
cli holds the entry points. At the top: service.py wires the stages; config, errors, clock,
telemetry and health are used by every stage and import none (config reads only the period
grammar of store/periods.py). tests/test_layout.py keeps these rules true.
"""

__version__ = "0.1.0"
