"""The similarity merge: what merges, what does not, and that the set alone decides."""

from __future__ import annotations

import random

from otlp_stats.patterns.extractor import PatternExtractor
from otlp_stats.patterns.merge import merge_patterns


def test_patterns_differing_in_one_of_many_positions_merge() -> None:
    final = merge_patterns(["user alice logged in from <*>", "user bob logged in from <*>"])
    assert set(final.values()) == {"user <*> logged in from <*>"}


def test_short_patterns_differing_in_a_word_stay_apart() -> None:
    final = merge_patterns(["cache hit", "cache miss"])
    assert final == {"cache hit": "cache hit", "cache miss": "cache miss"}


def test_different_lengths_and_first_words_never_merge() -> None:
    patterns = ["a b c d e f", "a b c d e f g", "z b c d e f"]
    assert merge_patterns(patterns) == {p: p for p in patterns}


def test_masks_in_the_same_place_agree_and_differences_become_masks() -> None:
    final = merge_patterns(["job <*> done on host a ok", "job <*> done on host b ok"])
    assert set(final.values()) == {"job <*> done on host <*> ok"}


def test_the_result_depends_on_the_set_not_the_order() -> None:
    rng = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "eps"]
    patterns = [
        " ".join(rng.choice(words) if rng.random() < 0.3 else f"w{i}" for i in range(8))
        for _ in range(300)
    ]
    first = merge_patterns(patterns)
    for _ in range(5):
        rng.shuffle(patterns)
        assert merge_patterns(patterns + patterns[:10]) == first


def test_final_patterns_of_shuffled_messages_are_the_same() -> None:
    messages = [f"user {name} logged in from 10.0.0.{i}" for i, name in enumerate("abcdefgh")]
    messages += [f"disk {d} is {n}% full" for d, n in (("sda", 91), ("sdb", 3))]
    extractor = PatternExtractor()
    first = dict(zip(messages, extractor.final_patterns(messages), strict=True))
    shuffled = list(reversed(messages))
    assert dict(zip(shuffled, extractor.final_patterns(shuffled), strict=True)) == first
    assert first["user a logged in from 10.0.0.0"] == "user <*> logged in from <*>"
