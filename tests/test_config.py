"""Settings: flags > environment > .env > defaults, validated with exit code 2."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from otlp_stats.cli import replay
from otlp_stats.config import ConfigError, ListenAddress, Settings, load_settings, setting_names
from tests.support.servicetools import REPO


def load(
    argv: list[str], env: dict[str, str] | None = None, dotenv: str = "", tmp: Path | None = None
) -> Settings:
    assert tmp is not None
    (tmp / ".env").write_text(dotenv)
    return load_settings(argv, env or {}, cwd=tmp)


def test_defaults(tmp_path: Path) -> None:
    settings = load([], tmp=tmp_path)
    assert settings == Settings()
    assert settings.attribute_key == "service.name"
    assert settings.window == 10
    assert settings.grpc_listen == ListenAddress("0.0.0.0", 4317)
    assert settings.admin_listen == ListenAddress("0.0.0.0", 9464)
    assert settings.max_recv_size == 64 * 1024 * 1024


def test_flag_beats_environment_beats_dotenv(tmp_path: Path) -> None:
    dotenv = "OTLP_STATS_WINDOW=3\nOTLP_STATS_ATTRIBUTE_KEY=from.dotenv\nOTLP_STATS_WORKERS=7\n"
    env = {"OTLP_STATS_WINDOW": "4", "OTLP_STATS_ATTRIBUTE_KEY": "from.env"}
    settings = load(["--window", "5"], env, dotenv, tmp_path)
    assert settings.window == 5
    assert settings.attribute_key == "from.env"
    assert settings.workers == 7


def test_sizes_accept_suffixes(tmp_path: Path) -> None:
    settings = load(["--max-recv-size", "8MiB", "--queue-max-bytes", "1048576"], tmp=tmp_path)
    assert settings.max_recv_size == 8 * 1024 * 1024
    assert settings.queue_max_bytes == 1024 * 1024


@pytest.mark.parametrize(
    ("text", "setting"), [("auto", None), ("all", 0), ("ALL", 0), ("0", 0), ("25", 25)]
)
def test_report_top_is_a_count_all_or_auto(tmp_path: Path, text: str, setting: int | None) -> None:
    assert load(["--report-top", text], tmp=tmp_path).report_top == setting


def test_ipv6_listen_address(tmp_path: Path) -> None:
    settings = load(["--grpc-listen", "[::1]:4317"], tmp=tmp_path)
    assert settings.grpc_listen == ListenAddress("::1", 4317)
    assert str(settings.grpc_listen) == "[::1]:4317"


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--window", "0"], "--window"),
        (["--window", "-1"], "--window"),
        (["--window", "abc"], "--window"),
        (["--attribute-key", ""], "--attribute-key"),
        (["--attribute-key", "has space"], "--attribute-key"),
        (["--grpc-listen", "4317"], "--grpc-listen"),
        (["--grpc-listen", "host:99999"], "--grpc-listen"),
        (["--report-format", "xml"], "--report-format"),
        (["--report-top", "-1"], "--report-top"),
        (["--report-top", "some"], "--report-top"),
        (["--workers", "0"], "--workers"),
        (["--max-recv-size", "lots"], "--max-recv-size"),
        (["--grpc-listen", "127.0.0.1:5000", "--admin-listen", "127.0.0.1:5000"], "must differ"),
    ],
)
def test_bad_values_are_refused_with_the_setting_named(
    tmp_path: Path, argv: list[str], names: str
) -> None:
    with pytest.raises(ConfigError, match=names):
        load(argv, tmp=tmp_path)


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="OTLP_STATS_WINDOW"):
        load([], {"OTLP_STATS_WINDOW": "never"}, tmp=tmp_path)


def test_misspelt_dotenv_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="OTLP_STATS_WINDOWS"):
        load([], dotenv="OTLP_STATS_WINDOWS=5\n", tmp=tmp_path)


def test_bad_configuration_exits_2_with_a_clear_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "otlp_stats", "--window", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "--window" in result.stderr and "positive" in result.stderr
    assert result.stdout == ""


def test_unknown_flag_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "otlp_stats", "--no-such-flag"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 2


def test_env_example_lists_every_setting_with_its_default() -> None:
    text = (REPO / ".env.example").read_text()
    defaults = Settings()
    for name in setting_names():
        line = next(
            (ln for ln in text.splitlines() if ln.startswith(f"OTLP_STATS_{name.upper()}=")), None
        )
        assert line is not None, f"{name} missing from .env.example"
        value = line.split("=", 1)[1]
        assert (
            load_settings([], {f"OTLP_STATS_{name.upper()}": value}, cwd=REPO / "tests") == defaults
        ), name


def test_attribute_key_flag_is_repeatable_and_one_key_is_as_before(tmp_path: Path) -> None:
    settings = load(["--attribute-key", "k8s.namespace.name"], tmp=tmp_path)
    assert settings.attribute_keys == ("k8s.namespace.name",)
    assert settings.attribute_key == "k8s.namespace.name"


@pytest.mark.parametrize(
    ("argv", "env", "dotenv"),
    [
        (["--attribute-key", "a", "--attribute-key", "b"], {}, ""),
        ([], {"OTLP_STATS_ATTRIBUTE_KEY": "a,b"}, ""),
        ([], {}, "OTLP_STATS_ATTRIBUTE_KEY=a,b\n"),
    ],
)
def test_several_attribute_keys_come_from_flags_environment_and_dotenv(
    tmp_path: Path, argv: list[str], env: dict[str, str], dotenv: str
) -> None:
    settings = load(argv, env, dotenv, tmp_path)
    assert settings.attribute_keys == ("a", "b")
    assert settings.attribute_key == "a"


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        ("a,b,a", "a key given twice: a"),
        (",".join(f"k{i}" for i in range(17)), "at most 16 keys, not 17"),
        ("a,,b", "1-255 printable characters"),
    ],
)
def test_attribute_keys_are_at_most_16_and_none_twice(
    tmp_path: Path, keys: str, error: str
) -> None:
    with pytest.raises(ConfigError, match=error):
        load([], {"OTLP_STATS_ATTRIBUTE_KEY": keys}, tmp=tmp_path)


def test_a_key_given_twice_exits_2_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "otlp_stats", "--attribute-key", "a", "--attribute-key", "a"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2
    assert "a key given twice: a" in result.stderr
    assert "Traceback" not in result.stderr


def test_replay_of_json_lines_refuses_several_attribute_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--input-format", "jsonl", "--value-field", "svc", "--message-field", "msg"]
    argv += ["--attribute-key", "a", "--attribute-key", "b", "-"]
    status = replay.main(argv, stdin=io.BytesIO())
    assert status == replay.EXIT_BAD_USAGE
    assert "counts one --value-field" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_durability_is_ack_by_default_with_a_durable_store_in_one_process_only(
    kind: str, tmp_path: Path
) -> None:
    store = f"sqlite://{tmp_path}/state.db" if kind == "sqlite" else "redis://127.0.0.1:6379/0"
    assert load_settings(["--store", store], environ={}, cwd=tmp_path).acks_durably
    assert not load_settings([], environ={}, cwd=tmp_path).acks_durably
    assert not load_settings(
        ["--store", store, "--durability", "checkpoint"], environ={}, cwd=tmp_path
    ).acks_durably
    assert not load_settings(
        ["--store", store, "--processes", "2"], environ={}, cwd=tmp_path
    ).acks_durably


@pytest.mark.parametrize(
    ("flags", "why"),
    [
        ((), "needs store=sqlite"),
        (("--store", "sqlite:///tmp/x.db", "--processes", "2"), "needs processes=1"),
    ],
)
def test_durability_ack_without_a_store_this_process_writes_is_refused(
    flags: tuple[str, ...], why: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=why):
        load_settings(["--durability", "ack", *flags], environ={}, cwd=tmp_path)
