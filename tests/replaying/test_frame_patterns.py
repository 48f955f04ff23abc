"""JSON frames' patterns come from one C call per batch (record_patterns.message_patterns):
every window, value and late share gets the same patterns, records and examples as through the
Python path, one masker call per distinct message, and replay reports them alike."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.patterns_accuracy import SYSTEMS, default_data, read_system
from otlp_stats.cli.main import main
from otlp_stats.counting import record_patterns
from otlp_stats.counting.resolve import LabelRenderer
from otlp_stats.patterns.masker import Masker
from otlp_stats.patterns.tally import PatternCount
from otlp_stats.replaying.frames import FrameBatch, FrameCounter, FrameFields

pytestmark = pytest.mark.skipif(
    not record_patterns.HAVE_C_MASK_GROUPS, reason="_masker.c is not built"
)

START = 1_767_225_600  # 2026-01-01
_NS = 1_000_000_000
# Messages no log line has: not strings, absent, far past the bounds, odd bytes.
HOSTILE: list[object] = [
    None,
    17,
    2.5,
    True,
    {"b": [1, "x y 2"], "a": None},
    ["a 1", "b"],
    "",
    "   ",
    "x" * 70_000,
    "tok " * 2_000,
    "'unclosed " + "1 " * 100,
    "é 1",
    "\U0001f600 2",
    "<*>",
    "\x00 3",
]

Patterns = dict[tuple[str, int, str | None], list[PatternCount]]


def _frame_lines(rng: random.Random, messages: list[object]) -> list[bytes]:
    """Frames over three minutes, some out of order so that a few are late, and some without
    a message field at all."""
    lines = []
    for i, message in enumerate(messages):
        frame: dict[str, object] = {
            "ts": START + i * 180 // len(messages) - rng.randrange(0, 90),
            "svc": rng.choice(["web", "api", 7]),
        }
        if message is not None or rng.random() < 0.5:
            frame["msg"] = message
        lines.append(orjson.dumps(frame))
    return lines


def _patterns(batch: FrameBatch) -> Patterns:
    found: Patterns = {}
    for kind, windows in (("on time", batch.windows), ("late", batch.late_windows)):
        for window, tally in windows.items():
            for label, counted in tally.items():
                found[(kind, window, label)] = counted.patterns
    return found


def _both_paths(lines: list[bytes], monkeypatch: pytest.MonkeyPatch) -> tuple[Patterns, Patterns]:
    def count() -> Patterns:
        counter = FrameCounter(
            FrameFields("ts", "svc", "msg"), 60 * _NS, 10 * _NS, LabelRenderer(), Masker()
        )
        return _patterns(counter.tally(1, lines, 0))

    in_c = count()
    with monkeypatch.context() as patch:
        patch.setattr(record_patterns, "HAVE_C_MASK_GROUPS", False)
        in_python = count()
    return in_c, in_python


@pytest.mark.skipif(not default_data().is_dir(), reason="Loghub-2k is not there")
def test_loghub_frames_get_the_python_paths_patterns(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(16)
    messages: list[object] = [m for s in SYSTEMS for m in read_system(default_data(), s)[0]]
    lines = _frame_lines(rng, [*messages, *rng.sample(messages, 2_000)])
    in_c, in_python = _both_paths(lines, monkeypatch)
    assert in_c == in_python
    assert any(kind == "late" for kind, _, _ in in_c)  # the late shares are compared too
    assert sum(p.records for counts in in_c.values() for p in counts) == len(lines)


def test_hostile_frames_get_the_python_paths_patterns(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20)
    lines = _frame_lines(rng, [rng.choice(HOSTILE) for _ in range(600)])
    in_c, in_python = _both_paths(lines, monkeypatch)
    assert in_c == in_python
    patterns = {p.pattern for counts in in_c.values() for p in counts}
    assert {"<null>", "<empty>", "<*>"} <= patterns
    assert max(len(p.encode()) for p in patterns) <= 512


def test_replayed_frames_report_alike_through_either_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(7)
    pool = [f"order {n} shipped in {n % 50}ms" for n in range(40)] + ["disk full", "é", ""]
    path = tmp_path / "frames.jsonl"
    path.write_bytes(b"\n".join(_frame_lines(rng, [rng.choice(pool) for _ in range(500)])))
    argv = [
        "replay", "--input-format", "jsonl", "--time-field", "ts", "--value-field", "svc",
        "--message-field", "msg", "--window", "60", "--top-patterns", "100",
        "--report-format", "json", str(path),
    ]  # fmt: skip
    assert main(argv) == 0
    in_c = _reports(capsys.readouterr().out)
    monkeypatch.setattr(record_patterns, "HAVE_C_MASK_GROUPS", False)
    assert main(argv) == 0
    in_python = _reports(capsys.readouterr().out)
    assert in_c == in_python
    patterns = {p["pattern"] for r in in_c for v in r["values"] for p in v["top_patterns"]}
    assert "order <*> shipped in <*>ms" in patterns


def _reports(out: str) -> list[Any]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]
