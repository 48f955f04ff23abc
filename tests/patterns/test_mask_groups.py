"""A batch's patterns per key in one C call (_masker.c mask_groups, through
record_patterns.message_patterns) equal the Python path's, one masker call per distinct message:
the same patterns, records, examples and order, on Loghub lines and on hostile ones."""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence

import pytest

from bench.patterns_accuracy import SYSTEMS, default_data, read_system
from otlp_stats.counting import record_patterns
from otlp_stats.counting.record_patterns import Key, message_patterns, message_patterns_python
from otlp_stats.patterns.masker import Masker, PatternCuts
from otlp_stats.patterns.rules import parse_rules
from otlp_stats.patterns.tally import PatternCount
from tests.patterns.test_masker_c import random_message

pytestmark = pytest.mark.skipif(
    not record_patterns.HAVE_C_MASK_GROUPS, reason="_masker.c is not built"
)

# (max_tokens, max_length): the defaults, and bounds that cut most messages.
BOUNDS = [(64, 512), (3, 512), (64, 12), (1, 3)]
HOSTILE = [
    "",
    " ",
    "\t\r\n\f\v",
    "<*>",
    "<*> <*>",
    "x" * 100_000,  # one token far past max_length
    "a " * 5_000,  # far past max_tokens
    "1 " * 5_000,
    "'unclosed quote " + "w " * 300,
    '"' * 1_000,
    "key=" + "=" * 2_000,
    "\x00\x00 nul 1",
    "é 1",
    "z 1",  # é sorts after z by code point and by UTF-8 bytes alike
    "\U0001f600 1",  # above every BMP character in both orders
    "\ufffd 1",
    "\ud800 1",  # a lone surrogate (a str read with surrogateescape): three bytes in C
    "\udcff\udcfe 2",
    "a 1",
    "a 10",  # a prefix of another example, and longer: the shorter is kept
    "a 1\x00",
    "Fri Jun 2 10:00:00 2026",
    "user=bob@example.com from 10.0.0.1:8080 in 31ms",
]


Grouped = list[tuple[Key, list[PatternCount]]]


def _both(
    columns: Sequence[Sequence[Hashable]], messages: Sequence[str | None], masker: Masker
) -> tuple[Grouped, Grouped]:
    """Both paths' patterns, in the order they give keys and patterns; the records each counts
    as cut at the two bounds are equal too."""
    c_cuts, python_cuts = PatternCuts(), PatternCuts()
    c = list(message_patterns(columns, messages, masker, c_cuts).items())
    python = list(message_patterns_python(columns, messages, masker, python_cuts).items())
    assert (c_cuts.tokens, c_cuts.length) == (python_cuts.tokens, python_cuts.length)
    return c, python


def _columns(rng: random.Random, count: int) -> list[list[Hashable]]:
    """Frames' keys: late or not, a window, a value (None for frames without one)."""
    values: list[str | None] = ["web", "api", None, "é"]
    return [
        [rng.random() < 0.1 for _ in range(count)],
        [10**12 + rng.randrange(3) for _ in range(count)],  # ints past the small ones' cache
        [rng.choice(values) for _ in range(count)],
    ]


def _loghub_messages() -> list[str]:
    return [m for system in SYSTEMS for m in read_system(default_data(), system)[0]]


@pytest.mark.skipif(not default_data().is_dir(), reason="Loghub-2k is not there")
@pytest.mark.parametrize(("max_tokens", "max_length"), BOUNDS)
def test_loghub_lines_give_the_python_paths_patterns(max_tokens: int, max_length: int) -> None:
    rng = random.Random(max_tokens * 1_000 + max_length)
    messages = _loghub_messages()
    # Repeats, in another order: records add up and the smallest example is kept.
    batch: list[str | None] = [*messages, *rng.sample(messages, len(messages)), None]
    masker = Masker(max_tokens=max_tokens, max_length=max_length)
    c, python = _both(_columns(rng, len(batch)), batch, masker)
    assert c == python
    assert sum(p.records for _, counts in c for p in counts) == len(batch)


@pytest.mark.parametrize(("max_tokens", "max_length"), BOUNDS)
def test_hostile_lines_give_the_python_paths_patterns(max_tokens: int, max_length: int) -> None:
    rng = random.Random(max_tokens + max_length)
    batch: list[str | None] = [*HOSTILE, None, *rng.sample(HOSTILE, len(HOSTILE))]
    masker = Masker(max_tokens=max_tokens, max_length=max_length)
    c, python = _both(_columns(rng, len(batch)), batch, masker)
    assert c == python
    assert {"<empty>", "<null>"} < {p.pattern for _, counts in c for p in counts}
    assert sum(p.records for _, counts in c for p in counts) == len(batch)


def test_random_batches_give_the_python_paths_patterns() -> None:
    rng = random.Random(2026)
    for _ in range(300):
        pool = [random_message(rng) for _ in range(rng.randrange(1, 30))]
        batch: list[str | None] = [
            None if rng.random() < 0.05 else rng.choice(pool) for _ in range(rng.randrange(60))
        ]
        masker = Masker(*(((), *rng.choice(BOUNDS))))
        c, python = _both(_columns(rng, len(batch)), batch, masker)
        assert c == python, batch


def test_a_pattern_counts_its_records_once_per_key_with_the_smallest_example() -> None:
    values = ["web", "web", "api", "web", "web", "api"]
    messages: list[str | None] = ["took 31ms", "took 4ms", "took 9ms", None, "", "took 10ms"]
    assert message_patterns([values], messages, Masker()) == {
        ("web",): [
            PatternCount("took <*>ms", 2, "took 31ms"),
            PatternCount("<null>", 1, ""),
            PatternCount("<empty>", 1, ""),
        ],
        ("api",): [PatternCount("took <*>ms", 2, "took 10ms")],
    }


def test_a_key_is_a_records_values_in_every_column() -> None:
    columns: list[list[Hashable]] = [["web", "web", "web", "api"], [1, 2, 1, 1]]
    grouped = message_patterns(columns, ["a", "b", "c", "d"], Masker())
    assert grouped == {
        ("web", 1): [PatternCount("a", 1, "a"), PatternCount("c", 1, "c")],
        ("web", 2): [PatternCount("b", 1, "b")],
        ("api", 1): [PatternCount("d", 1, "d")],
    }


def test_keys_are_told_apart_as_a_dicts_keys_are() -> None:
    """hash(-1) == hash(-2), yet they differ; 1, 1.0 and True are one key, the first kept."""
    nan = float("nan")
    column: list[Hashable] = [-1, -2, 1, True, 1.0, None, nan, nan, float("nan"), -1]
    messages: list[str | None] = [f"m{n}" for n in range(len(column))]
    c, python = _both([column], messages, Masker())
    assert c == python
    keys = [key for key, _ in c]
    assert keys[:4] == [(-1,), (-2,), (1,), (None,)] and type(keys[2][0]) is int
    assert len(keys) == 6  # two NaN objects: two keys, each equal only to itself
    assert [counts[0].records for _, counts in c] == [2, 1, 3, 1, 2, 1]


def test_the_bounds_are_the_maskers() -> None:
    message = "alpha beta gamma delta"
    assert message_patterns([[0]], [message], Masker(max_tokens=2)) == {
        (0,): [PatternCount("alpha beta <*>", 1, message)]
    }
    assert message_patterns([[0]], [message], Masker(max_length=12)) == {
        (0,): [PatternCount("alpha <*>", 1, message)]
    }


def test_a_teams_rules_run_first_through_the_python_path() -> None:
    masker = Masker(parse_rules('[rules]\norder = "order-[a-z]+"\n', "rules.toml"))
    columns, messages = [["web", "web"]], ["shipped order-abc", "shipped order-xyz"]
    assert message_patterns(columns, messages, masker) == {
        ("web",): [PatternCount("shipped <*>", 2, "shipped order-abc")]
    }


def test_wrong_arguments_are_refused_not_crashed_on() -> None:
    from otlp_stats.patterns._masker import mask_groups

    with pytest.raises(TypeError, match="str or None"):
        mask_groups([[1]], [b"bytes"], 64, 512, PatternCount)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="differ in length"):
        mask_groups([[1, 2]], ["a"], 64, 512, PatternCount)
    with pytest.raises(ValueError, match="differ in length"):
        mask_groups([[1], [1, 2]], ["a"], 64, 512, PatternCount)
    with pytest.raises(ValueError, match="at least one column"):
        mask_groups([], ["a"], 64, 512, PatternCount)
    with pytest.raises(ValueError, match="max_tokens"):
        mask_groups([[1]], ["a"], 0, 512, PatternCount)
    with pytest.raises(TypeError, match="unhashable"):
        mask_groups([[[1]]], ["a"], 64, 512, PatternCount)  # type: ignore[list-item]


def test_the_batch_counts_records_cut_at_each_bound() -> None:
    """Records, not distinct messages: a message cut at both bounds counts in both."""
    masker = Masker(max_tokens=3, max_length=12)
    messages: list[str | None] = ["a b c d e", "a b c d e", "short", "abcdefghijklmnop q", None]
    cuts = PatternCuts()
    message_patterns([["v"] * len(messages)], messages, masker, cuts)
    assert (cuts.tokens, cuts.length) == (2, 1)
