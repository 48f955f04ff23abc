"""docs/operations.md keeps up with the service: its metrics reference lists exactly the
otlp_stats_* metrics /metrics has, and the make targets it tells operators to run exist."""

from __future__ import annotations

import re

from tests.support.deploytools import exported_metric_names
from tests.support.servicetools import REPO

OPERATIONS = REPO / "docs" / "operations.md"


def reference_rows() -> set[str]:
    """Metric names in the first column of the metrics reference table."""
    section = OPERATIONS.read_text().split("## Metrics reference", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(otlp_stats_[a-z_]+)`", section, flags=re.MULTILINE))


def exported_families() -> set[str]:
    """One name per exported metric, as an operator queries it: histograms by their base name."""
    names = {name for name in exported_metric_names() if name.startswith("otlp_stats_")}
    histograms = {name.removesuffix("_bucket") for name in names if name.endswith("_bucket")}
    hidden = {h + suffix for h in histograms for suffix in ("_bucket", "_sum", "_count")}
    # A counter is also known by its family name without _total; operators query the latter.
    counters = {name.removesuffix("_total") for name in names if name.endswith("_total")}
    return (names - hidden - counters) | histograms


def test_metrics_reference_lists_exactly_what_the_service_exports() -> None:
    documented, exported = reference_rows(), exported_families()
    assert sorted(exported - documented) == [], "exported but not in docs/operations.md"
    assert sorted(documented - exported) == [], "in docs/operations.md but not exported"


def test_make_targets_named_in_the_guide_exist() -> None:
    makefile = (REPO / "Makefile").read_text()
    # `make x` in the text, or a code block line starting with make.
    commands = re.findall(r"(?:`|^)make ([a-z0-9-]+)", OPERATIONS.read_text(), flags=re.MULTILINE)
    assert "k6-smoke" in commands
    for target in set(commands):
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), target
