"""_masker.c gives the reference's patterns (masker.py), byte for byte, on any message."""

from __future__ import annotations

import random

import pytest

from bench.patterns_accuracy import SYSTEMS, default_data, read_system
from otlp_stats.patterns import masker
from otlp_stats.patterns.masker import (
    CUT_LENGTH,
    CUT_TOKENS,
    mask_builtin_python,
    mask_builtin_python_cuts,
)

pytestmark = pytest.mark.skipif(not masker.HAVE_C_MASKER, reason="_masker.c is not built")

# Every class the rules tell apart, weighted towards the ones that interact.
_ALPHABET = (
    *"aZ09xX_.-:/+=,;&@\"'()[]{}<>*#%$!?|\\`^~",
    *("  ", "\t", "\n", "µ", "é", "\ud800", "ms", "KB", "::", "0x", "<*>", "Fri", "Jun"),
    *("ssh2", "jk2_init", "ab1_", "user=", "a@b.c", "10.0.0.1", "'a b'", '"x"', "=", "'"),
)


def _c(message: str, max_tokens: int = 64, max_length: int = 512) -> str:
    return masker._mask_builtin_c(message, max_tokens, max_length)


def random_message(rng: random.Random) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randrange(0, 40)))


def test_random_messages_mask_alike_in_c_and_python() -> None:
    rng = random.Random(2026)
    for _ in range(20_000):
        message = random_message(rng)
        tokens, length = rng.choice([(64, 512), (3, 512), (64, 12), (1, 3)])
        assert _c(message, tokens, length) == mask_builtin_python(message, tokens, length), message


def test_random_messages_are_cut_alike_in_c_and_python() -> None:
    rng = random.Random(2027)
    cut = 0
    for _ in range(20_000):
        message = random_message(rng)
        tokens, length = rng.choice([(64, 512), (3, 512), (64, 12), (1, 3), (4, 16)])
        python = mask_builtin_python_cuts(message, tokens, length)
        assert masker._mask_builtin_c_cuts(message, tokens, length) == python, message
        cut += python[1] != 0
    assert cut > 1_000  # the small bounds cut many of them, at each bound


# Hostile messages, and what each is cut at with the default bounds (64 tokens, 512 bytes).
_HOSTILE = [
    (" ".join(f"w{i}x" for i in range(10_000)), CUT_TOKENS),
    ("9" * 100_000, 0),  # one masked token: within both bounds without a cut
    ("x" * 100_000, CUT_LENGTH),
    (" ".join("y" * 30 for _ in range(200)), CUT_TOKENS | CUT_LENGTH),
    ("\udcff\udcfe " * 70, CUT_TOKENS),  # invalid UTF-8 read with surrogateescape
    ('say "' + "a " * 5_000 + '" done', 0),  # a quoted value is one token, masked
    ("Fri Jun " * 40 + "'open", CUT_TOKENS),  # the general path (date words, a quote)
    ("abcdefghijklmnopqrst\tb " * 300, CUT_TOKENS | CUT_LENGTH),  # a tab: a direct event
    ("payment 8812 accepted in 31ms", 0),
]


@pytest.mark.parametrize(("message", "cuts"), _HOSTILE)
def test_hostile_messages_are_cut_alike_in_c_and_python(message: str, cuts: int) -> None:
    python = mask_builtin_python_cuts(message, 64, 512)
    assert python[1] == cuts
    assert masker._mask_builtin_c_cuts(message, 64, 512) == python


@pytest.mark.skipif(not default_data().is_dir(), reason="Loghub-2k is not there")
def test_loghub_messages_mask_alike_in_c_and_python() -> None:
    for system in SYSTEMS:
        for message in read_system(default_data(), system)[0]:
            assert _c(message) == mask_builtin_python(message, 64, 512), message


def test_bounds_are_checked_in_c_too() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        _c("x", 0, 512)
