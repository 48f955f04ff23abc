"""The command line: serving (the default command) and `query`. Process-wide concerns, signal
handlers and the malloc tuning, are set here and nowhere else.

May import: every stage and service.py. Nothing imports cli but otlp_stats/__main__.py.
"""
