"""Sinks: where reports go besides stdout (files, webhooks, Redis streams, OTLP metrics), each
behind its own bounded queue on the sinks' own thread, so none can slow counting.

May import: counting (the window reports) and the top modules, as the rest of reporting.
"""
