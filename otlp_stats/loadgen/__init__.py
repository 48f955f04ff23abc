"""Load generator: pre-built OTLP log requests, driven over gRPC, with the ground truth sent."""

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
