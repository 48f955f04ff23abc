"""The pattern settings: bounds, the rule file checked at start (exit 2 on a bad rule), and the
one masker built from them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from otlp_stats.config import ConfigError, Settings, load_settings, setting_names
from otlp_stats.patterns.masker import Masker
from tests.support.servicetools import REPO

RULES = """\
[rules]
tenant = 'tenant/[a-z]+'
"""


def load(argv: list[str], tmp: Path, env: dict[str, str] | None = None) -> Settings:
    (tmp / ".env").write_text("")
    return load_settings(argv, env or {}, cwd=tmp)


def test_pattern_defaults(tmp_path: Path) -> None:
    settings = load([], tmp_path)
    assert settings.count_patterns is True
    assert (settings.top_patterns, settings.max_patterns) == (3, 1000)
    assert (settings.max_pattern_tokens, settings.max_pattern_length) == (64, 512)
    assert settings.pattern_rules is None and settings.report_patterns is False


def test_the_masker_applies_the_rules_and_bounds_of_the_settings(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    flags = ["--pattern-rules", str(rules), "--max-pattern-tokens", "3"]
    masker = load(flags, tmp_path).masker()
    assert isinstance(masker, Masker)
    assert masker.mask("quota of tenant/acme reached today") == "quota of <*> <*>"
    assert Masker().mask("quota of tenant/acme reached") == "quota of tenant/acme reached"


def test_no_masker_when_patterns_are_not_counted(tmp_path: Path) -> None:
    settings = load([], tmp_path, {"OTLP_STATS_COUNT_PATTERNS": "false"})
    assert settings.masker() is None


def test_the_rule_file_is_read_once_at_start(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    settings = load(["--pattern-rules", str(rules)], tmp_path)
    rules.write_text("not toml [")
    assert settings.pattern_rules is not None
    assert [rule.name for rule in settings.pattern_rules.rules] == ["tenant"]
    assert settings.masker() is not None


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--top-patterns", "-1"], "--top-patterns='-1': must be zero or a positive integer"),
        (["--max-patterns", "0"], "--max-patterns='0': must be a positive integer"),
        (["--max-pattern-tokens", "0"], "--max-pattern-tokens='0': must be a positive"),
        (["--max-pattern-length", "2"], "--max-pattern-length='2': must be at least 3 bytes"),
        (["--count-patterns", "maybe"], "--count-patterns='maybe': must be true or false"),
    ],
)
def test_bad_pattern_bounds_are_configuration_errors(
    tmp_path: Path, argv: list[str], error: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load(argv, tmp_path)
    assert str(raised.value).startswith(error)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[rules]\norder_id = 'ORD-('\n", "rule 'order_id': bad regular expression: missing )"),
        ("[rules]\nempty = 'x*'\n", "rule 'empty': the expression matches the empty string"),
        ("[rules\n", "not TOML"),
        ("[masks]\na = 'x'\n", "unknown table or key 'masks'"),
    ],
)
def test_a_bad_rule_file_names_the_flag_the_file_and_the_rule(
    tmp_path: Path, text: str, error: str
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load(["--pattern-rules", str(rules)], tmp_path)
    message = str(raised.value)
    assert message.startswith(f"--pattern-rules={str(rules)!r}: ")
    assert error in message
    # The file is named once, by the flag's value.
    assert message.count(str(rules)) == 1


def test_a_missing_rule_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load([], tmp_path, {"OTLP_STATS_PATTERN_RULES": str(tmp_path / "nowhere.toml")})


def test_a_bad_rule_exits_2_with_one_line_before_serving(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text("[rules]\ntenant = 'tenant/[a-z'\n")
    result = subprocess.run(
        [sys.executable, "-m", "otlp_stats", "--pattern-rules", str(rules)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("otlp-stats: invalid configuration: --pattern-rules=")
    assert "rule 'tenant': bad regular expression" in line


def test_every_setting_is_in_the_readme_settings_table() -> None:
    table = [
        line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("| `--")
    ]
    flags = {
        flag for line in table for flag in line.split("|")[1].replace("`", "").strip().split(", ")
    }
    missing = [name for name in setting_names() if "--" + name.replace("_", "-") not in flags]
    assert missing == []
