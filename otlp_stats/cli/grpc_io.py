"""Which of grpc core's TCP listeners serves the gRPC door: the poller-thread one, by default.

grpc core (1.85) accepts and reads server connections on its EventEngine's own threads. Under
grpc.aio each request then crosses three threads: an EventEngine thread reads it, the
completion-queue poller thread that grpc.aio runs picks up the event, and the event loop runs
the handler. With grpc's `event_engine_listener` experiment turned off, the older listener
reads the socket on the poller thread itself: one thread hop fewer per request, and about a
fifth less CPU per small gRPC request for the service and for a handler that does nothing alike
(BENCHMARKS.md, "Small requests"; docs/scaling.md). Every gRPC contract is the same on both:
the listener is below the HTTP/2 transport, TLS, limits and SO_REUSEPORT.

grpc reads GRPC_EXPERIMENTS once, when it is first imported, so this runs before anything
imports grpc; the serving processes of --processes inherit it from the environment. An
operator who sets GRPC_EXPERIMENTS, even to nothing, keeps grpc's own choice.
"""

from __future__ import annotations

import os
import sys

EXPERIMENTS_VARIABLE = "GRPC_EXPERIMENTS"
POLLER_LISTENER = "-event_engine_listener"


def prefer_poller_listener() -> str:
    """Choose the listener; say what was done ("poller", "operator", or "too_late")."""
    if EXPERIMENTS_VARIABLE in os.environ:
        return "operator"
    if "grpc" in sys.modules:
        # Already initialised (the command run in-process, as tests do): this process keeps
        # grpc's default, and its children are not made to differ from it.
        return "too_late"
    os.environ[EXPERIMENTS_VARIABLE] = POLLER_LISTENER
    return "poller"


def listener_in_use() -> str:
    """ "poller" or "event_engine": what grpc was told in this process's environment."""
    experiments = os.environ.get(EXPERIMENTS_VARIABLE, "").replace(" ", "").split(",")
    return "poller" if POLLER_LISTENER in experiments else "event_engine"
