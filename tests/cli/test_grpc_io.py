"""The gRPC door's listener: grpc core's poller-thread one unless the operator chose (grpc_io)."""

from __future__ import annotations

import os

import pytest

from otlp_stats.cli.grpc_io import EXPERIMENTS_VARIABLE, POLLER_LISTENER
from tests.support.fakes import worked_example_request
from tests.support.grpctools import GrpcChannels
from tests.support.probes import probe_json
from tests.support.servicetools import running_service

# In a fresh process, as the entry point does: choose, then report what grpc will read.
_PROBE = """
import json, os, sys
if sys.argv[1] == "grpc-first":
    import grpc
from otlp_stats.cli.grpc_io import listener_in_use, prefer_poller_listener
outcome = prefer_poller_listener()
print(json.dumps([outcome, os.environ.get("GRPC_EXPERIMENTS"), listener_in_use()]))
"""


def _probe(order: str, **environment: str) -> list[str | None]:
    env = {k: v for k, v in os.environ.items() if k != EXPERIMENTS_VARIABLE}
    found: list[str | None] = probe_json(_PROBE, order, env={**env, **environment})
    return found


def test_the_poller_listener_is_chosen_before_grpc_is_imported() -> None:
    assert _probe("ours-first") == ["poller", POLLER_LISTENER, "poller"]


def test_an_operator_s_grpc_experiments_are_left_alone() -> None:
    assert _probe("ours-first", GRPC_EXPERIMENTS="") == ["operator", "", "event_engine"]
    both = f"pollset_alternative, {POLLER_LISTENER}"
    assert _probe("ours-first", GRPC_EXPERIMENTS=both) == ["operator", both, "poller"]


def test_nothing_is_changed_once_grpc_has_read_its_settings() -> None:
    assert _probe("grpc-first") == ["too_late", None, "event_engine"]


@pytest.mark.parametrize(
    ("operator", "listener"), [(None, "poller"), ("", "event_engine")], ids=["default", "operator"]
)
def test_the_service_serves_and_says_which_listener(
    operator: str | None,
    listener: str,
    grpc_channels: GrpcChannels,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(EXPERIMENTS_VARIABLE, raising=False)
    env = {} if operator is None else {EXPERIMENTS_VARIABLE: operator}
    with running_service("--attribute-key", "foo", "--window", "1000000", env=env) as service:
        assert service.wait_log("starting")["grpc_listener"] == listener
        grpc_channels.logs_stub(service.grpc_target).Export(worked_example_request(), timeout=10)
        assert service.stop() == 0
        [report] = service.all_reports()
    assert report["records"] == 5
