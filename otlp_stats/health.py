"""The service's health state machine: starting -> serving -> draining -> stopped.

Liveness, readiness, the Export handlers and shutdown all read it from this one place.
"""

from __future__ import annotations

import enum
from collections.abc import Callable


class HealthState(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPED = "stopped"


_ALLOWED = {
    HealthState.STARTING: {HealthState.SERVING, HealthState.DRAINING, HealthState.STOPPED},
    HealthState.SERVING: {HealthState.DRAINING, HealthState.STOPPED},
    HealthState.DRAINING: {HealthState.STOPPED},
    HealthState.STOPPED: set(),
}

Listener = Callable[[HealthState], None]


class Health:
    def __init__(self) -> None:
        self._state = HealthState.STARTING
        self._listeners: list[Listener] = []
        self._unavailable: str | None = None

    @property
    def state(self) -> HealthState:
        return self._state

    @property
    def live(self) -> bool:
        return self._state is not HealthState.STOPPED

    @property
    def ready(self) -> bool:
        """Serving, and able to accept an Export (the journal can be written)."""
        return self._state is HealthState.SERVING and self._unavailable is None

    @property
    def unavailable(self) -> str | None:
        """Why Exports are refused while serving (--durability ack: the journal cannot be
        written), or None."""
        return self._unavailable

    def set_unavailable(self, reason: str | None) -> None:
        """Not ready while `reason` holds (None: ready again); the state does not change."""
        if reason == self._unavailable:
            return
        self._unavailable = reason
        for listener in self._listeners:
            listener(self._state)

    @property
    def accepting(self) -> bool:
        """Exports are taken while serving; refused while starting, draining or stopped."""
        return self._state is HealthState.SERVING

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)
        listener(self._state)

    def move_to(self, state: HealthState) -> None:
        """Advance the state; moving backwards (draining -> serving) is refused."""
        if state is self._state:
            return
        if state not in _ALLOWED[self._state]:
            raise ValueError(f"health cannot go from {self._state.value} to {state.value}")
        self._state = state
        for listener in self._listeners:
            listener(state)
