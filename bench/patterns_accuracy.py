"""Pattern accuracy on Loghub-2k: grouping and parsing accuracy per system, a markdown table.

Loghub (https://github.com/logpai/loghub): Jieming Zhu, Shilin He, Pinjia He, Jinyang Liu,
Michael R. Lyu, "Loghub: A Large Collection of System Log Datasets for AI-driven Log Analytics",
ISSRE 2023. Its licence (LICENSE beside the data) asks that every use refer to the repository
and cite that paper. The measures are those of Zhu et al., "Tools and Benchmarks for Automated
Log Parsing", ICSE-SEIP 2019: grouping accuracy (GA), a line is right when the set of lines
sharing its predicted pattern equals the set sharing its true EventId; parsing accuracy (PA),
a line is right when its predicted pattern equals its true template once both have every run
of masks as one `<*>` and single spaces.

    python -m bench.patterns_accuracy [--data DIR]
"""

from __future__ import annotations

import argparse
import csv
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


def measure(data: Path, system: str, extractor: PatternExtractor) -> Accuracy:
    messages, events, templates = read_system(data, system)
    predicted = extractor.final_patterns(messages)
    return Accuracy(
        system,
        len(messages),
        grouping_accuracy(predicted, events),
        parsing_accuracy(predicted, templates),
        len(set(predicted)),
        len(set(events)),
    )


def render(results: Sequence[Accuracy]) -> str:
    lines = [
        "| system | lines | grouping accuracy | parsing accuracy | patterns | true templates |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.system} | {r.lines} | {r.grouping:.3f} | {r.parsing:.3f} | "
            f"{r.predicted_templates} | {r.true_templates} |"
        )
    mean_ga = sum(r.grouping for r in results) / len(results)
    mean_pa = sum(r.parsing for r in results) / len(results)
    lines.append(f"| **mean** | | **{mean_ga:.3f}** | **{mean_pa:.3f}** | | |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="the loghub-2k folder")
    parser.add_argument("--systems", nargs="*", default=list(SYSTEMS))
    args = parser.parse_args(argv)
    extractor = PatternExtractor()
    print(render([measure(args.data, system, extractor) for system in args.systems]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
