"""The command line as a new user meets it: --version, a --help that lists the commands and
groups the flags by stage, choices and sizes shown as they are typed."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from otlp_stats import __version__
from otlp_stats.cli.main import COMMANDS, build_parser, main
from otlp_stats.config import SETTING_GROUPS, format_size, setting_names

REPO = Path(__file__).resolve().parents[2]
STAGES = ["receiving", "counting", "reporting", "storage", "security", "operations"]


def help_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_version_is_the_package_version() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert __version__ == project["version"]


@pytest.mark.parametrize(
    "command",
    [[str(Path(sys.executable).parent / "otlp-stats")], [sys.executable, "-m", "otlp_stats"]],
    ids=["console-script", "python-m"],
)
def test_version_prints_the_name_and_version(command: list[str]) -> None:
    result = subprocess.run(
        [*command, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"otlp-stats {__version__}\n",
        "",
    )


def test_help_lists_the_commands_serving_first_as_the_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = help_text(capsys, "--help")
    listed = text.split("commands:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split()[0] for line in listed] == ["serve", "query", "replay", "pattern"]
    assert "(default)" in listed[0]
    assert text.startswith("usage: otlp-stats [serve] [options]\n")


def test_help_groups_the_flags_by_stage_in_the_pipeline_order(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = help_text(capsys, "--help")
    positions = [text.index(f"\n{stage}:\n") for stage in STAGES]
    assert positions == sorted(positions)
    receiving = text.split("\nreceiving:\n", 1)[1].split("\ncounting:\n", 1)[0]
    assert "--grpc-listen" in receiving and "--window" not in receiving


def test_every_setting_is_in_exactly_one_group() -> None:
    grouped = [name for _, names in SETTING_GROUPS for name in names]
    assert sorted(grouped) == sorted(setting_names())
    assert [title for title, _ in SETTING_GROUPS] == STAGES


def test_help_shows_choices_and_sizes_as_they_are_typed(capsys: pytest.CaptureFixture[str]) -> None:
    text = " ".join(help_text(capsys, "--help").split())  # argparse wraps lines at will
    assert "--report-format {text,json}" in text
    assert "--log-level {debug,info,warning,error}" in text
    assert "--grpc-health {true,false}" in text
    assert "--queue-max-bytes SIZE" in text and "(default: 64MiB)" in text
    assert "REPORT_FORMAT" not in text and "67108864" not in text
    assert "(default: 1d,1mo)" in text and "(default: unset)" in text


def test_serve_named_or_not_is_the_same_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert help_text(capsys, "serve", "--help") == help_text(capsys, "--help")


def test_query_has_its_own_help(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(capsys, "query", "--help")
    assert text.startswith("usage: otlp-stats query")
    assert "--from DATE" in text


def test_every_flag_of_the_parser_is_a_setting_or_a_command_line_option() -> None:
    flags = {
        action.option_strings[-1].removeprefix("--").replace("-", "_")
        for action in build_parser()._actions
    }
    assert flags == {*setting_names(), "help", "version", "env_file"}


@pytest.mark.parametrize("name", [name for name, _ in COMMANDS])
def test_every_command_help_lists_is_one(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert help_text(capsys, name, "--help").startswith("usage: otlp-stats")


@pytest.mark.parametrize(
    ("size", "shown"),
    [(64 * 1024 * 1024, "64MiB"), (4096, "4KiB"), (2 * 1024**3, "2GiB"), (1000, "1000")],
)
def test_sizes_are_shown_in_the_largest_unit_that_divides_them(size: int, shown: str) -> None:
    assert format_size(size) == shown


@pytest.mark.parametrize(
    ("argv", "stderr"),
    [
        (["--window", "0"], "--window='0': must be a positive number"),
        (["serve", "--window", "0"], "--window='0': must be a positive number"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_bad_settings_still_exit_2(argv: list[str], stderr: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "otlp_stats", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 2
    assert stderr in result.stderr and result.stdout == ""
