"""Operating: the operator's surface. The admin HTTP port (/metrics, probes, /v1/distinct,
/v1/patterns), the scrape-time state gauges, the gRPC health service, and the query API over
the store.

May import: counting, patterns, reporting, store and the top modules. Must not import:
receiving, cli, service.
"""
