"""glibc malloc thresholds: request-sized buffers are reused rather than faulted in afresh."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# In a fresh process: apply the thresholds (or not), then allocate and free 1 MiB buffers the
# way requests come and go, and count the page faults that takes.
_PROBE = """
import json, resource
from otlp_stats.allocator import keep_freed_buffers
outcome = keep_freed_buffers()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for n in range(50):
    buffer = b"x" * (1 << 20)  # written, so its pages are touched
    del buffer
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"outcome": outcome, "faults": faults}))
"""


def _probe(**environment: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**env, **environment},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    probe: dict[str, object] = json.loads(result.stdout)
    return probe


def test_freed_request_buffers_are_reused_without_page_faults() -> None:
    tuned = _probe()
    assert tuned["outcome"] == "tuned"
    # 50 buffers of 256 pages each: reused, they fault once at most, not 50 times.
    assert isinstance(tuned["faults"], int) and tuned["faults"] < 1_000


def test_an_operator_s_own_malloc_settings_are_left_alone() -> None:
    # MALLOC_MMAP_THRESHOLD_ at glibc's default: every 1 MiB buffer is mapped and unmapped, so
    # its pages fault in each time (the probe above could fail).
    untuned = _probe(MALLOC_MMAP_THRESHOLD_="131072")
    assert untuned["outcome"] == "operator"
    assert isinstance(untuned["faults"], int) and untuned["faults"] > 50 * 200
