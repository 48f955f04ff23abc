"""The masker: a log message -> its pattern, each variable token masked as `<*>`.

A pure token classifier, no learned state: the same message gives the same pattern on every
replica, in every order, after every restart, so patterns merge across replicas and rollups as
distinct messages do. Each rule is a scan over character classes (no backtracking expression in
the built-in rules): masker_core.h is the same rules in C, for the wire scanner's single pass,
and tests hold the two equal. A team's own rules (`--pattern-rules`, regular expressions) run
first, in Python.

How a message is read: split on blanks (space, tab, CR, LF, FF, VT) into tokens, at most
`max_tokens` of them (the rest become one trailing `<*>`). Quoted values (`"..."`, `'...'`
opening a token or following `=`, `:`, `(` or `[`) are masked first, over blanks. A token that
is an email is masked whole. Then each token is cut at punctuation into words; the value of
`key=value` is masked whatever it holds (up to `,`, `;`, `&` or the token's end), and any other
word holding a digit is masked (numbers, hex and ids, UUIDs, IPv4 and IPv6 addresses and
ports, dates and times, versions), except a name with one digit (`ssh2`, `IPv6`, `jk2_init`).
A number followed by a known unit (`31ms`, `10KB`) keeps its unit. Masked words that touch
through `.:-/+` become one `<*>` (`10.0.0.1:8080`, `fe80::1`, `2024-01-02T03:04:05Z`). A
weekday or month name beside a masked token is part of a date and masked too. The pattern is
cut at `max_length` bytes of UTF-8, at a token's end, with a trailing `<*>`.

`mask_cuts` also says which of the two bounds a message was cut at (CUT_TOKENS, CUT_LENGTH),
for the metric of each (otlp_stats_pattern_cut_records_total): the C rules say the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

MASK = "<*>"
# Bounds: tokens read per message, bytes (UTF-8) per pattern (documented in docs/patterns.md).
DEFAULT_MAX_TOKENS = 64
DEFAULT_MAX_LENGTH = 512
# The bounds a message's pattern was cut at: bits of mask_cuts' second value (0: neither).
CUT_TOKENS = 1
CUT_LENGTH = 2

_BLANKS = " \t\r\n\f\v"
_DIGITS = frozenset("0123456789")
# Characters that cut a token into words; a masked word's neighbours across them stay as they are.
_PUNCTUATION = frozenset("=:,;()[]{}<>\"'/|@#!?*&$%^~`\\")
# Between two masked words, a run of only these makes them one masked value.
_JOINERS = frozenset(".:-/+")
_QUOTES = frozenset("\"'")
# What ends the value of `key=value` inside a token (`a=1,b=2`, `x=1&y=2`).
_VALUE_ENDS = frozenset(",;&")
# Units a number keeps: time, size, rate; `31ms` -> `<*>ms`.
_UNITS = frozenset(
    {
        *("ns", "us", "µs", "ms", "s", "sec", "secs", "m", "min", "mins", "h", "d"),
        *("b", "B", "k", "K", "kb", "KB", "kB", "mb", "MB", "gb", "GB", "tb", "TB"),
        *("KiB", "MiB", "GiB", "TiB", "bytes", "%"),
    }
)
_DATE_WORDS = frozenset(
    {
        *("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
        *("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
    }
)


class CutCounter(Protocol):
    """Where records whose pattern was cut are counted: a PatternCuts, or the C scanner's Scan
    (which counts those it masks itself, in check's pass)."""

    def add_pattern_cuts(self, cuts: int, records: int, /) -> None:
        """`records` records of one message, cut at `cuts` (CUT_TOKENS | CUT_LENGTH, or 0)."""
        ...


class PatternCuts:
    """Records whose pattern was cut at the token bound, at the length bound (a record cut at
    both is in both): what one request's masking adds to otlp_stats_pattern_cut_records_total."""

    __slots__ = ("length", "tokens")

    def __init__(self, tokens: int = 0, length: int = 0) -> None:
        self.tokens = tokens
        self.length = length

    def add_pattern_cuts(self, cuts: int, records: int, /) -> None:
        """`records` records of one message, cut at `cuts` (CUT_TOKENS | CUT_LENGTH, or 0)."""
        if cuts:
            self.tokens += records if cuts & CUT_TOKENS else 0
            self.length += records if cuts & CUT_LENGTH else 0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PatternCuts):
            return NotImplemented
        return (self.tokens, self.length) == (other.tokens, other.length)

    def __repr__(self) -> str:
        return f"PatternCuts(tokens={self.tokens}, length={self.length})"


@dataclass(frozen=True)
class PatternRule:
    """A team's own mask: what it matches becomes `<*>` before the built-in rules run."""

    name: str
    expression: re.Pattern[str]


class Masker:
    """Masks messages with a team's rules, then the built-in ones; bounded, stateless."""

    def __init__(
        self,
        rules: Sequence[PatternRule] = (),
        max_tokens: int = DEFAULT_MAX_TOKENS,
        max_length: int = DEFAULT_MAX_LENGTH,
    ) -> None:
        if max_tokens < 1 or max_length < len(MASK):
            raise ValueError("max_tokens must be at least 1 and max_length at least 3")
        self._rules = tuple(rules)
        self._max_tokens = max_tokens
        self._max_length = max_length

    @property
    def has_rules(self) -> bool:
        """True with a team's rules: those run in Python, so the C scanner cannot mask alone."""
        return bool(self._rules)

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    @property
    def max_length(self) -> int:
        return self._max_length

    def mask(self, message: str) -> str:
        """The message's pattern: its tokens, variable parts masked, joined by one space."""
        for rule in self._rules:
            message = rule.expression.sub(MASK, message)
        return mask_builtin(message, self._max_tokens, self._max_length)

    def mask_cuts(self, message: str) -> tuple[str, int]:
        """mask's pattern, and the bounds it was cut at: CUT_TOKENS | CUT_LENGTH, or 0."""
        for rule in self._rules:
            message = rule.expression.sub(MASK, message)
        return mask_builtin_cuts(message, self._max_tokens, self._max_length)


def mask_builtin_python(message: str, max_tokens: int, max_length: int) -> str:
    """The built-in rules, the reference (_masker.c is held equal to it)."""
    return mask_builtin_python_cuts(message, max_tokens, max_length)[0]


def mask_builtin_python_cuts(message: str, max_tokens: int, max_length: int) -> tuple[str, int]:
    """mask_builtin_python's pattern, and the bounds it was cut at (CUT_TOKENS, CUT_LENGTH)."""
    tokens = split_tokens(message, max_tokens)
    masked = [mask_token(token) for token in tokens]
    mask_date_words(tokens, masked)
    pattern, cut = _bounded(masked, max_length)
    # split_tokens gives max_tokens + 1 tokens (the last `<*>`) only when it cut the message.
    cuts = CUT_TOKENS if len(tokens) > max_tokens else 0
    return pattern, cuts | CUT_LENGTH if cut else cuts


def _mask_builtin_c(message: str, max_tokens: int, max_length: int) -> str:
    # surrogatepass: a lone surrogate (a str decoded with surrogateescape) is one non-ASCII
    # character to the reference, three bytes >= 0x80 to C; both are word characters.
    encoded = message.encode("utf-8", "surrogatepass")
    assert c_mask is not None
    return c_mask(encoded, max_tokens, max_length).decode("utf-8", "surrogatepass")


def _mask_builtin_c_cuts(message: str, max_tokens: int, max_length: int) -> tuple[str, int]:
    encoded = message.encode("utf-8", "surrogatepass")
    assert c_mask_cuts is not None
    pattern, cuts = c_mask_cuts(encoded, max_tokens, max_length)
    return pattern.decode("utf-8", "surrogatepass"), cuts


c_mask: Callable[[bytes, int, int], bytes] | None
c_mask_cuts: Callable[[bytes, int, int], tuple[bytes, int]] | None
try:
    from otlp_stats.patterns._masker import mask as c_mask
    from otlp_stats.patterns._masker import mask_cuts as c_mask_cuts
except ImportError:  # not built (no C compiler): the reference, slower, same patterns
    c_mask = c_mask_cuts = None
    mask_builtin = mask_builtin_python
    mask_builtin_cuts = mask_builtin_python_cuts
    HAVE_C_MASKER = False
else:
    mask_builtin = _mask_builtin_c
    mask_builtin_cuts = _mask_builtin_c_cuts
    HAVE_C_MASKER = True


def split_tokens(message: str, max_tokens: int) -> list[str]:
    """Blank-separated tokens, a quoted value masked (blanks and all); past max_tokens, one
    `<*>`. Linear: a quote with no closing one after it is not looked for again."""
    tokens: list[str] = []
    unclosed: set[str] = set()
    i, n = 0, len(message)
    while True:
        while i < n and message[i] in _BLANKS:
            i += 1
        if i >= n:
            break
        if len(tokens) == max_tokens:
            tokens.append(MASK)
            break
        start = piece = i
        pieces: list[str] = []
        while i < n and message[i] not in _BLANKS:
            char = message[i]
            if char in _QUOTES and char not in unclosed and _opens_value(message, start, i):
                end = message.find(char, i + 1)
                if end < 0:
                    unclosed.add(char)
                else:
                    pieces += [message[piece : i + 1], MASK]
                    piece = i = end
            i += 1
        pieces.append(message[piece:i])
        tokens.append("".join(pieces))
    return tokens


def _opens_value(message: str, start: int, i: int) -> bool:
    """A quote opens a value at a token's start or after `=`, `:`, `(` or `[` (an apostrophe
    inside a word does not)."""
    return i == start or message[i - 1] in "=:(["


def mask_token(token: str) -> str:
    """One token with its variable words masked."""
    if token == MASK:
        return token
    if _is_email(token):
        return MASK
    out: list[str] = []
    in_value = False
    for is_word, text in _words(token):
        if in_value and not any(c in _VALUE_ENDS for c in text):
            # Still the value of `key=`: masked as one, whatever it holds.
            if out[-1] != MASK:
                out.append(MASK)
            continue
        in_value = False
        if is_word:
            out.append(_mask_word(text))
            continue
        out.append(text)
        # `key=value`: the value runs to the next `,`, `;` or `&`, or the token's end.
        in_value = text == "=" and len(out) > 1
    return _join_masked(out)


def _words(token: str) -> list[tuple[bool, str]]:
    """The token as alternating runs: words, and punctuation between them."""
    parts: list[tuple[bool, str]] = []
    start = 0
    for i in range(1, len(token) + 1):
        if i == len(token) or (token[i] in _PUNCTUATION) != (token[start] in _PUNCTUATION):
            parts.append((token[start] not in _PUNCTUATION, token[start:i]))
            start = i
    return parts


def _mask_word(word: str) -> str:
    if not any(c in _DIGITS for c in word) or _is_name_with_digit(word):
        return word
    unit = _unit_suffix(word)
    return MASK + unit


def _is_name_with_digit(word: str) -> bool:
    """`ssh2`, `IPv6`, `jk2_init`: two letters or more, one digit, then nothing or `_name`.

    Names of things, not values; a value holds more digits (`blk_-1608`, `R02-M1`)."""
    i = 0
    while i < len(word) and word[i].isascii() and word[i].isalpha():
        i += 1
    if i < 2 or i + 1 > len(word) or word[i] not in _DIGITS:
        return False
    rest = word[i + 1 :]
    return rest == "" or (rest[:1] == "_" and rest[1:].isascii() and rest[1:].isalpha())


def _unit_suffix(word: str) -> str:
    """`31ms` -> `ms`: a number followed by a known unit keeps the unit."""
    i = 0
    if word[:1] in "+-":
        i = 1
    digits = i
    while i < len(word) and (word[i] in _DIGITS or word[i] == "."):
        i += 1
    if i == digits or i == len(word):
        return ""
    suffix = word[i:]
    return suffix if suffix in _UNITS else ""


def _join_masked(parts: list[str]) -> str:
    """Masked words that touch through joiners (`.:-/+`) become one `<*>`."""
    out: list[str] = []
    for i, part in enumerate(parts):
        next_masked = i + 1 < len(parts) and parts[i + 1].startswith(MASK)
        if part.endswith("::") and next_masked:
            # IPv6 shortened at its start (`::1`, `[::1]`): the colons are the address's.
            part = part[:-2]
        if not part:
            continue
        if part == MASK and out and out[-1] == MASK:
            continue
        if out and out[-1] == MASK and next_masked and all(c in _JOINERS for c in part):
            continue
        out.append(part)
    return "".join(out)


def _is_email(token: str) -> bool:
    """One `@`, something before it, and a dot after it with something on either side."""
    at = token.find("@")
    return at > 0 and token.count("@") == 1 and "." in token[at + 2 : -1]


def mask_date_words(tokens: Sequence[str], masked: list[str]) -> None:
    """A weekday or month name beside a masked token is a date's part: masked too."""
    for i, token in enumerate(tokens):
        if token not in _DATE_WORDS:
            continue
        before = i > 0 and masked[i - 1].startswith(MASK)
        after = i + 1 < len(masked) and masked[i + 1].startswith(MASK)
        nxt = i + 1 < len(tokens) and tokens[i + 1] in _DATE_WORDS
        if before or after or nxt:
            masked[i] = MASK


def _bounded(masked: list[str], max_length: int) -> tuple[str, bool]:
    """The pattern within max_length bytes of UTF-8 (bytes, as the C scanner counts), cut at a
    token's end with a trailing `<*>`; and whether it was cut."""
    pattern = " ".join(masked)
    if len(pattern) * 4 <= max_length:
        return pattern, False
    encoded = pattern.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_length:
        return pattern, False
    cut = encoded.rfind(b" ", 0, max_length - len(MASK))
    if cut <= 0:
        return MASK, True
    return encoded[:cut].decode("utf-8", "surrogatepass") + " " + MASK, True
