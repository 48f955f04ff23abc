"""`python -m otlp_stats.loadgen`: run the load generator from the command line."""

import sys

from otlp_stats.loadgen.cli import main

if __name__ == "__main__":
    sys.exit(main())
