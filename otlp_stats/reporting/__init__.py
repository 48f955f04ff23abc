"""Reporting: turns each closed window into its report and prints it (text or JSON, stdout);
where reports go besides stdout belongs here too.

May import: counting (the aggregator's reports, the queue it waits on), patterns (the top
patterns a report names) and the top modules.
Must not import: receiving, store, operating, cli, service.
"""
