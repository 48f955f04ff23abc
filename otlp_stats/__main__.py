"""`python -m otlp_stats`: the same command line as the `otlp-stats` console script."""

import sys

from otlp_stats.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
