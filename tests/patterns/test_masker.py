"""The masker: each built-in rule with its examples, its bounds, and that it has no state."""

from __future__ import annotations

import random

import pytest

from otlp_stats.patterns.masker import MASK, Masker


@pytest.mark.parametrize(
    ("message", "pattern"),
    [
        # Numbers, signed and decimal; a number keeps a known unit.
        ("payment 8812 accepted in 31ms", "payment <*> accepted in <*>ms"),
        ("retry -3 of +4 after 1.5s", "retry <*> of <*> after <*>s"),
        ("wrote 10KB, 12MB and 7 bytes, 93%", "wrote <*>KB, <*>MB and <*> bytes, <*>%"),
        # Hex and ids.
        ("pointer 0x7ffd5a3c at 5a3f9c21", "pointer <*> at <*>"),
        ("block blk_-1608999687919862906 stored", "block <*> stored"),
        ("trace 123e4567-e89b-12d3-a456-426614174000 done", "trace <*> done"),
        # IPv4, IPv6, ports.
        ("from 10.0.0.1:8080 to [::1]:443", "from <*> to [<*>]:<*>"),
        ("peer fe80::1ff:fe23:4567:890a up", "peer <*> up"),
        ("client [173.234.31.186] refused", "client [<*>] refused"),
        # Dates and times; a weekday or month name beside them.
        ("at 2024-01-02T03:04:05.123Z ok", "at <*> ok"),
        ("at Fri Jun 17 07:07:00 2005 closed", "at <*> <*> <*> <*> <*> closed"),
        ("on 12/04/2005 at 10:22:33", "on <*> at <*>"),
        # Quoted values, over blanks; an apostrophe is no quote.
        ('open "my file.txt" failed', 'open "<*>" failed'),
        ("can't open 'a b c' now", "can't open '<*>' now"),
        ('reason="disk full" code=7', 'reason="<*>" code=<*>'),
        # key=value values, whatever they hold; an empty value stays empty.
        ("login user=root rhost=host.example.com ruser=", "login user=<*> rhost=<*> ruser="),
        ("query a=1&b=x;c=y,d=2", "query a=<*>&b=<*>;c=<*>,d=<*>"),
        # Paths: the segments holding ids, not the path.
        ("GET /users/8812/orders/ab12f", "GET /users/<*>/orders/<*>"),
        ("read /etc/httpd/conf/workers.properties", "read /etc/httpd/conf/workers.properties"),
        # Emails.
        ("mail to bob.smith@example.com sent", "mail to <*> sent"),
        # Names with one digit are names: ssh2, IPv6, jk2_init().
        (
            "Accepted password port 22 ssh2 via IPv6 in jk2_init()",
            "Accepted password port <*> ssh2 via IPv6 in jk2_init()",
        ),
        # Blanks: any run is one separator.
        ("  a \t b\r\n", "a b"),
    ],
)
def test_built_in_rules_mask_the_variable_parts(message: str, pattern: str) -> None:
    assert Masker().mask(message) == pattern


def test_words_without_digits_are_left_to_the_merge() -> None:
    assert Masker().mask("user alice logged in") == "user alice logged in"


def test_past_max_tokens_the_rest_is_one_mask() -> None:
    masker = Masker(max_tokens=3)
    assert masker.mask("a b c d e f") == "a b c <*>"
    assert masker.mask("a b c") == "a b c"


def test_a_pattern_is_cut_at_a_token_under_max_length() -> None:
    pattern = Masker(max_length=20).mask("alpha beta gamma delta epsilon")
    assert pattern == "alpha beta gamma <*>"
    assert len(pattern) <= 20


def test_hostile_messages_stay_within_the_bounds() -> None:
    masker = Masker()
    assert masker.mask("9" * 100_000) == MASK
    many = masker.mask(" ".join(f"w{i}x" for i in range(10_000)))
    assert len(many.split(" ")) <= 65
    assert len(masker.mask("x" * 100_000)) <= 512
    # An unpaired quote is a character: the message is not taken as one value.
    assert masker.mask('say "hello') == 'say "hello'


def test_the_same_message_gives_the_same_pattern_in_any_order() -> None:
    rng = random.Random(20)
    messages = [f"job {rng.randrange(10**6)} took {rng.randrange(999)}ms" for _ in range(200)]
    first = {m: Masker().mask(m) for m in messages}
    rng.shuffle(messages)
    masker = Masker()
    assert {m: masker.mask(m) for m in messages} == first
    assert set(first.values()) == {"job <*> took <*>ms"}


def test_bounds_below_one_token_are_refused() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        Masker(max_tokens=0)
