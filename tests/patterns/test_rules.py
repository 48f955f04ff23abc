"""--pattern-rules: a team's masks, read and checked at start, applied before the built-in ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from otlp_stats.patterns.masker import Masker
from otlp_stats.patterns.rules import PatternRulesError, load_rules, parse_rules


def test_rules_apply_in_order_before_the_built_in_ones(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[rules]\ntenant = 'tenant/[a-z]+'\ncolour = '\\b(red|green|blue)\\b'\n")
    rules = load_rules(path)
    assert [rule.name for rule in rules] == ["tenant", "colour"]
    masker = Masker(rules)
    assert masker.mask("tenant/acme paints it red in 3s") == "<*> paints it <*> in <*>s"
    # Without them, words without digits stay.
    assert Masker().mask("tenant/acme paints it red") == "tenant/acme paints it red"


def test_an_empty_file_has_no_rules() -> None:
    assert parse_rules("", "empty.toml") == []


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[rules]\nbad = '('\n", "rule 'bad': bad regular expression"),
        ("[rules]\nempty = ''\n", "rule 'empty': the expression must have 1 to"),
        ("[rules]\nanything = 'x*'\n", "rule 'anything': the expression matches the empty"),
        ("[rules]\nnumber = 3\n", "rule 'number': the expression must be a string"),
        ("rules = 'x'\n", "rules must be a table"),
        ("[masks]\na = 'x'\n", "unknown table or key 'masks'"),
        ("[rules\n", "not TOML"),
    ],
)
def test_a_bad_rule_file_says_which_rule_and_why(text: str, reason: str) -> None:
    with pytest.raises(PatternRulesError, match=r"^f\.toml: ") as raised:
        parse_rules(text, "f.toml")
    assert reason in str(raised.value)
    assert "\n" not in str(raised.value)


def test_an_unreadable_file_is_a_rule_error(tmp_path: Path) -> None:
    with pytest.raises(PatternRulesError, match="cannot read"):
        load_rules(tmp_path / "missing.toml")


def test_the_rule_file_in_the_docs_is_valid_and_masks_what_it_says() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "patterns.md").read_text()
    example = docs.split("```toml\n", 1)[1].split("```", 1)[0]
    masker = Masker(parse_rules(example, "docs/patterns.md"))
    assert masker.mask("ORD-DEADBEEF for tenant/acme in red") == "<*> for <*> in <*>"
