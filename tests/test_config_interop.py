"""Settings for the interoperability features: the OTLP/HTTP address and the gRPC switches."""

from __future__ import annotations

from pathlib import Path

import pytest

from otlp_stats.config import ConfigError, ListenAddress, Settings, load_settings


def load(argv: list[str], tmp: Path, env: dict[str, str] | None = None) -> Settings:
    return load_settings(argv, env or {}, cwd=tmp)


def test_defaults_serve_otlp_http_on_4318_with_health_and_reflection(tmp_path: Path) -> None:
    settings = load([], tmp_path)
    assert settings.http_listen == ListenAddress("0.0.0.0", 4318)
    assert settings.grpc_health is True
    assert settings.grpc_reflection is True


FALSE = ("false", "FALSE", "0", "no", "off")
TRUE = ("true", "True", "1", "yes", "on")


@pytest.mark.parametrize(
    ("text", "value"), [(text, False) for text in FALSE] + [(text, True) for text in TRUE]
)
def test_switches_take_the_usual_spellings(tmp_path: Path, text: str, value: bool) -> None:
    settings = load(["--grpc-health", text], tmp_path, {"OTLP_STATS_GRPC_REFLECTION": text})
    assert settings.grpc_health is value
    assert settings.grpc_reflection is value


def test_switches_can_come_from_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("OTLP_STATS_GRPC_REFLECTION=off\n")
    assert load([], tmp_path).grpc_reflection is False


@pytest.mark.parametrize("text", ["", "maybe", "2", "enabled"])
def test_a_switch_that_is_not_a_boolean_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=r"--grpc-reflection.*true or false"):
        load(["--grpc-reflection", text], tmp_path)


def test_http_listen_from_the_environment(tmp_path: Path) -> None:
    settings = load([], tmp_path, {"OTLP_STATS_HTTP_LISTEN": "[::1]:14318"})
    assert settings.http_listen == ListenAddress("::1", 14318)


SAME = "127.0.0.1:5000"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--http-listen", SAME, "--grpc-listen", SAME], "grpc_listen and http_listen"),
        (["--http-listen", SAME, "--admin-listen", SAME], "http_listen and admin_listen"),
    ],
)
def test_the_http_address_must_differ_from_the_others(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=f"{message} must differ"):
        load(argv, tmp_path)


def test_every_port_may_be_zero_at_once(tmp_path: Path) -> None:
    zero = "127.0.0.1:0"
    settings = load(
        ["--grpc-listen", zero, "--http-listen", zero, "--admin-listen", zero], tmp_path
    )
    assert settings.http_listen == ListenAddress("127.0.0.1", 0)
