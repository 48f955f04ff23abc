"""The soak harness, short: RSS flat, latency steady, every acknowledged record reported.

`make soak` runs the same harness for 10 minutes; see docs/reliability.md for its figures.

What this 12 s run is for: the harness end to end (six samples, a verdict, exit 0), nothing
acknowledged lost, and RSS within the default 25% growth. It is not a drift check: each
third is the median of two 2 s samples, and the first one carries the warm-up (measured here:
p99 79 ms, then 22-77 ms), so its p99 bound (11x) only catches latency blowing up by an order
of magnitude. Drift is what the 10-minute `make soak` and its strict defaults are for.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.servicetools import REPO


def test_a_short_soak_passes_with_flat_rss_and_nothing_lost() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.soak",
            "--duration=12",
            "--interval=2",
            "--rate=50",
            "--callers=4",
            # Only a gross blow-up (see the docstring); `make soak` keeps the strict default.
            "--max-p99-growth=10",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    samples = [line for line in lines if line["event"] == "soak_sample"]
    verdict = lines[-1]
    assert len(samples) == 6, result.stdout + result.stderr
    assert verdict["event"] == "soak_verdict" and verdict["passed"], verdict
    assert verdict["records_acknowledged"] == verdict["records_reported"] > 0
    assert result.returncode == 0
