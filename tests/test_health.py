"""The health state machine."""

from __future__ import annotations

import pytest

from otlp_stats.health import Health, HealthState


def test_starting_is_live_but_not_ready() -> None:
    health = Health()
    assert health.live and not health.ready and not health.accepting


def test_serving_is_ready_and_accepting() -> None:
    health = Health()
    health.move_to(HealthState.SERVING)
    assert health.live and health.ready and health.accepting


def test_draining_is_live_not_ready_and_refuses_exports() -> None:
    health = Health()
    health.move_to(HealthState.SERVING)
    health.move_to(HealthState.DRAINING)
    assert health.live and not health.ready and not health.accepting


def test_cannot_go_back_from_draining_to_serving() -> None:
    health = Health()
    health.move_to(HealthState.DRAINING)
    with pytest.raises(ValueError, match="draining to serving"):
        health.move_to(HealthState.SERVING)


def test_listeners_hear_the_current_state_then_every_change() -> None:
    health = Health()
    heard: list[HealthState] = []
    health.subscribe(heard.append)
    health.move_to(HealthState.SERVING)
    health.move_to(HealthState.SERVING)
    health.move_to(HealthState.STOPPED)
    assert heard == [HealthState.STARTING, HealthState.SERVING, HealthState.STOPPED]
