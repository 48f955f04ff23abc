"""`python -m otlp_stats` and the `otlp-stats` console script: one command line for both."""

import sys

from otlp_stats.cli.grpc_io import prefer_poller_listener


def run() -> int:
    # Before anything imports grpc, which reads the listener choice once (cli/grpc_io.py). Here
    # and not in cli.main: tests run that in-process, where it would change their environment.
    prefer_poller_listener()
    from otlp_stats.cli.main import main

    return main()


if __name__ == "__main__":
    sys.exit(run())
