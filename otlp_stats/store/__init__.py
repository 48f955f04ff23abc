"""Where counting state lives beyond one process: memory, an SQLite file, or a shared Redis."""
