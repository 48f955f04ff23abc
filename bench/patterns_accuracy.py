"""Pattern accuracy on Loghub-2k: grouping and parsing accuracy per system, a markdown table.

Loghub (https://github.com/logpai/loghub): Jieming Zhu, Shilin He, Pinjia He, Jinyang Liu,
Michael R. Lyu, "Loghub: A Large Collection of System Log Datasets for AI-driven Log Analytics",
ISSRE 2023. Its licence (LICENSE beside the data) asks that every use refer to the repository
and cite that paper. The measures are those of Zhu et al., "Tools and Benchmarks for Automated
Log Parsing", ICSE-SEIP 2019: grouping accuracy (GA), a line is right when the set of lines
sharing its predicted pattern equals the set sharing its true EventId; parsing accuracy (PA),
a line is right when its predicted pattern equals its true template once both have every run
of masks as one `<*>` and single spaces.

drain3 (https://github.com/logpai/Drain3) with its defaults is measured beside, on the same
lines, when it is installed (the test extra has it).

    python -m bench.patterns_accuracy [--data DIR] [--no-drain3]
"""

from __future__ import annotations

import argparse
import csv
import logging
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from otlp_stats.patterns.extractor import PatternExtractor

_ROOT = Path(__file__).resolve().parents[1]
# `../shared/data/loghub-2k` beside the checkout (a worktree sits one level deeper).
DATA_CANDIDATES = tuple(up / "shared" / "data" / "loghub-2k" for up in _ROOT.parents[:2])


def default_data() -> Path:
    return next((p for p in DATA_CANDIDATES if p.is_dir()), DATA_CANDIDATES[0])


# The four systems shared for tuning; the other twelve of Loghub-2k are held out.
SYSTEMS = ("Apache", "OpenSSH", "Linux", "HealthApp")
_MASKS = re.compile(r"(?:<\*>)+")


@dataclass(frozen=True)
class Accuracy:
    system: str
    lines: int
    grouping: float
    parsing: float
    predicted_templates: int
    true_templates: int
    # drain3 with its defaults on the same lines, when it is installed (the test extra).
    drain3_grouping: float | None = None
    drain3_parsing: float | None = None


def read_system(data: Path, system: str) -> tuple[list[str], list[str], list[str]]:
    """The system's messages (the Content column), true event ids and true templates."""
    with (data / f"{system}_2k.log_structured.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return (
        [row["Content"] for row in rows],
        [row["EventId"] for row in rows],
        [row["EventTemplate"] for row in rows],
    )


def grouping_accuracy(predicted: Sequence[str], truth: Sequence[str]) -> float:
    """The share of lines whose predicted group is exactly their true group."""
    by_predicted: dict[str, set[int]] = defaultdict(set)
    by_truth: dict[str, set[int]] = defaultdict(set)
    for line, (p, t) in enumerate(zip(predicted, truth, strict=True)):
        by_predicted[p].add(line)
        by_truth[t].add(line)
    right = sum(1 for p, t in zip(predicted, truth, strict=True) if by_predicted[p] == by_truth[t])
    return right / len(truth)


def normalise(template: str) -> str:
    return _MASKS.sub("<*>", " ".join(template.split()))


def parsing_accuracy(predicted: Sequence[str], templates: Sequence[str]) -> float:
    right = sum(
        1 for p, t in zip(predicted, templates, strict=True) if normalise(p) == normalise(t)
    )
    return right / len(templates)


def measure(
    data: Path, system: str, extractor: PatternExtractor, with_drain3: bool = False
) -> Accuracy:
    messages, events, templates = read_system(data, system)
    predicted = extractor.final_patterns(messages)
    drain3 = drain3_templates(messages) if with_drain3 else None
    return Accuracy(
        system,
        len(messages),
        grouping_accuracy(predicted, events),
        parsing_accuracy(predicted, templates),
        len(set(predicted)),
        len(set(events)),
        None if drain3 is None else grouping_accuracy([str(c) for c, _ in drain3], events),
        None if drain3 is None else parsing_accuracy([t for _, t in drain3], templates),
    )


def drain3_templates(messages: Sequence[str]) -> list[tuple[int, str]]:
    """Each message's drain3 cluster and that cluster's final template, drain3's defaults."""
    from drain3 import TemplateMiner
    from drain3.template_miner_config import TemplateMinerConfig

    # drain3 logs each new cluster at INFO; the table is the output here.
    logging.getLogger("drain3").setLevel(logging.WARNING)
    # A config given: drain3's defaults, not a drain3.ini that may lie in the directory.
    miner = TemplateMiner(config=TemplateMinerConfig())
    clusters = [int(miner.add_log_message(m)["cluster_id"]) for m in messages]
    templates = {c.cluster_id: str(c.get_template()) for c in miner.drain.clusters}
    return [(cluster, templates[cluster]) for cluster in clusters]


def have_drain3() -> bool:
    try:
        import drain3  # noqa: F401
    except ImportError:
        return False
    return True


def render(results: Sequence[Accuracy]) -> str:
    drain3 = all(r.drain3_grouping is not None for r in results)
    head = "| system | lines | grouping accuracy | parsing accuracy | patterns | true templates |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if drain3:
        head += " drain3 GA | drain3 PA |"
        rule += "---:|---:|"
    lines = [head, rule]
    for r in results:
        line = (
            f"| {r.system} | {r.lines} | {r.grouping:.3f} | {r.parsing:.3f} | "
            f"{r.predicted_templates} | {r.true_templates} |"
        )
        if drain3:
            line += f" {r.drain3_grouping:.3f} | {r.drain3_parsing:.3f} |"
        lines.append(line)
    mean = f"| **mean** | | **{_mean(results, 'grouping'):.3f}** | "
    mean += f"**{_mean(results, 'parsing'):.3f}** | | |"
    if drain3:
        mean += (
            f" {_mean(results, 'drain3_grouping'):.3f} | {_mean(results, 'drain3_parsing'):.3f} |"
        )
    lines.append(mean)
    return "\n".join(lines)


def _mean(results: Sequence[Accuracy], name: str) -> float:
    values = [getattr(r, name) for r in results]
    return float(sum(values) / len(values))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="the loghub-2k folder")
    parser.add_argument("--systems", nargs="*", default=list(SYSTEMS))
    parser.add_argument(
        "--no-drain3", action="store_true", help="leave drain3's columns out (also when absent)"
    )
    args = parser.parse_args(argv)
    extractor = PatternExtractor()
    drain3 = have_drain3() and not args.no_drain3
    print(render([measure(args.data, system, extractor, drain3) for system in args.systems]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
