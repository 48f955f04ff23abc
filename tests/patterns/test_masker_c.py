"""_masker.c gives the reference's patterns (masker.py), byte for byte, on any message."""

from __future__ import annotations

import random

import pytest

from bench.patterns_accuracy import SYSTEMS, default_data, read_system
from otlp_stats.patterns import masker
from otlp_stats.patterns.masker import mask_builtin_python

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


@pytest.mark.skipif(not default_data().is_dir(), reason="Loghub-2k is not there")
def test_loghub_messages_mask_alike_in_c_and_python() -> None:
    for system in SYSTEMS:
        for message in read_system(default_data(), system)[0]:
            assert _c(message) == mask_builtin_python(message, 64, 512), message


def test_bounds_are_checked_in_c_too() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        _c("x", 0, 512)
