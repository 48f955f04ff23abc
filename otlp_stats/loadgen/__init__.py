"""Load generator: pre-built OTLP log requests, driven over gRPC, with the ground truth sent.

A test and bench tool shipped with the package (`python -m otlp_stats.loadgen`), so a deployed
service can be loaded too. It imports nothing from otlp_stats outside loadgen/, and nothing in
the service imports it.
"""

from otlp_stats.loadgen.driver import EXPORT_METHOD, LoadPlan, LoadSummary, run_load
from otlp_stats.loadgen.truth import GroundTruth, ValueTruth
from otlp_stats.loadgen.workload import (
    Placement,
    PreparedRequest,
    ValueTally,
    Workload,
    build_requests,
    digest_requests,
)

__all__ = [
    "EXPORT_METHOD",
    "GroundTruth",
    "LoadPlan",
    "LoadSummary",
    "Placement",
    "PreparedRequest",
    "ValueTally",
    "ValueTruth",
    "Workload",
    "build_requests",
    "digest_requests",
    "run_load",
]
