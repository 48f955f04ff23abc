"""Store: where counting state lives beyond one process: memory, an SQLite file, or a shared
Redis, with the day and month rollups and the replicas' merge.

May import: counting (window snapshots, sketches), patterns (the pattern tables it merges),
reporting (the keeper is told of every window the reporter closes) and the top modules.
Must not import: receiving, operating, cli, service.
"""
