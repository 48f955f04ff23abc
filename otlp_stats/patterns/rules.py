"""A team's own masks (`--pattern-rules FILE`), read and checked once at start.

The file is TOML: one table, `[rules]`, each entry a rule's name and its regular expression
(Python's `re` syntax), applied in the file's order before the built-in rules:

    [rules]
    order_id = 'ORD-[0-9]{6}'
    tenant = 'tenant/[a-z]+'

TOML's single-quoted strings are literal: a backslash in them is the expression's own.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from otlp_stats.patterns.masker import PatternRule

# A rule's expression is applied to every message: a bound on what one file may ask.
MAX_RULES = 256
MAX_EXPRESSION_LENGTH = 1024


class PatternRulesError(ValueError):
    """A rule file that cannot be used; the message says which file, which rule and why."""


def load_rules(path: Path) -> list[PatternRule]:
    """The file's rules in order, or PatternRulesError."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PatternRulesError(f"{path}: cannot read: {error}") from None
    return parse_rules(text, str(path))


def parse_rules(text: str, source: str) -> list[PatternRule]:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PatternRulesError(f"{source}: not TOML: {error}") from None
    unknown = sorted(set(document) - {"rules"})
    if unknown:
        raise PatternRulesError(f"{source}: unknown table or key {unknown[0]!r}; only [rules]")
    table = document.get("rules", {})
    if not isinstance(table, dict):
        raise PatternRulesError(f"{source}: rules must be a table ([rules])")
    if len(table) > MAX_RULES:
        raise PatternRulesError(f"{source}: {len(table)} rules, more than {MAX_RULES}")
    return [_rule(source, name, expression) for name, expression in table.items()]


def _rule(source: str, name: str, expression: object) -> PatternRule:
    where = f"{source}: rule {name!r}"
    if not isinstance(expression, str):
        raise PatternRulesError(f"{where}: the expression must be a string")
    if not expression or len(expression) > MAX_EXPRESSION_LENGTH:
        raise PatternRulesError(
            f"{where}: the expression must have 1 to {MAX_EXPRESSION_LENGTH} characters"
        )
    try:
        compiled = re.compile(expression)
    except re.error as error:
        raise PatternRulesError(f"{where}: bad regular expression: {error}") from None
    # One that matches nothing at all would put a mask between every two characters.
    if compiled.fullmatch("") is not None:
        raise PatternRulesError(f"{where}: the expression matches the empty string")
    return PatternRule(name, compiled)
