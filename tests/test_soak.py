"""The soak harness, short: RSS flat, latency steady, every acknowledged record reported.

`make soak` runs the same harness for 10 minutes; see docs/reliability.md for its figures.
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
            # Short runs are noisy; the 10-minute run keeps the strict defaults.
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
