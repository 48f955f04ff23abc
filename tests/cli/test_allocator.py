"""glibc malloc thresholds: request-sized buffers are reused rather than faulted in afresh."""

from __future__ import annotations

import os

from tests.support.probes import probe_json

# In a fresh process: apply the thresholds (or not), then allocate requests the way they come and
# go (a few of about 370 KB held at once, then freed) and count the page faults that takes.
_PROBE = """
import json, resource, sys
from otlp_stats.cli.allocator import keep_freed_buffers
outcome = keep_freed_buffers() if sys.argv[1] == "tune" else "untouched"
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    held = [b"x" * 370_000 for _ in range(8)]  # written, so their pages are touched
    del held
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"outcome": outcome, "faults": faults}))
"""


def _probe(mode: str, **environment: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop("GLIBC_TUNABLES", None)
    env.pop("LD_PRELOAD", None)
    probe = probe_json(_PROBE, mode, env={**env, **environment})
    return str(probe["outcome"]), int(probe["faults"])


def test_freed_request_buffers_are_reused_without_page_faults() -> None:
    outcome, tuned = _probe("tune")
    _, untouched = _probe("leave")  # glibc's defaults, threshold adjusting itself
    assert outcome == "tuned"
    # 400 buffers of about 90 pages: glibc's defaults fault most of them in afresh.
    assert untouched > 10 * tuned, (tuned, untouched)


def test_an_operator_s_own_malloc_settings_are_left_alone() -> None:
    for setting in (
        {"MALLOC_TRIM_THRESHOLD_": "131072"},
        {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"},
    ):
        outcome, _ = _probe("tune", **setting)
        assert outcome == "operator", setting
