"""The command line: serving (the default command) and `query`. Process-wide concerns, signal
handlers, the malloc tuning and the gRPC listener's choice (applied by otlp_stats/__main__.py
before grpc is imported), are set here and nowhere else.

May import: every stage and service.py. Nothing imports cli but otlp_stats/__main__.py.
"""
