"""Log records sent through the OpenTelemetry Python SDK, and what they should count as.

The attribute sits on the resource, on the scope (`get_logger(..., attributes=...)`) and on
the record, in every combination; bodies repeat within and across combinations, and one of
them is structured (equal by value, whatever its key order).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.util.types import AnyValue

from tests.support.expected import ExpectedCounts, first_present

KEY = "tenant"
BODIES: tuple[AnyValue, ...] = (
    "user signed in",
    "user signed out",
    "payment failed",
    {"event": "checkout", "items": 3},
    "user signed in",  # a repeat inside the cycle
)
# Present-or-absent per place: (resource, scope, record).
PLACEMENTS = list(itertools.product((None, "res"), (None, "scope"), (None, "rec")))

ExporterFactory = Callable[[], LogRecordExporter]


@dataclass
class SdkSenders:
    """One LoggerProvider per resource variant, each with its own batch processor and exporter."""

    new_exporter: ExporterFactory
    batch_size: int = 512
    expected: ExpectedCounts = field(default_factory=ExpectedCounts)
    providers: dict[str | None, LoggerProvider] = field(default_factory=dict)

    def provider(self, resource_value: str | None) -> LoggerProvider:
        if resource_value not in self.providers:
            attributes = {} if resource_value is None else {KEY: resource_value}
            provider = LoggerProvider(
                resource=Resource.create({"service.name": "sdk-e2e", **attributes}),
                shutdown_on_exit=False,
            )
            provider.add_log_record_processor(
                BatchLogRecordProcessor(self.new_exporter(), max_export_batch_size=self.batch_size)
            )
            self.providers[resource_value] = provider
        return self.providers[resource_value]

    def emit_every_placement(self, records_per_placement: int, tag: str = "") -> None:
        for number, (resource, scope, record) in enumerate(PLACEMENTS):
            logger = self.provider(resource).get_logger(
                f"scope-{number}", attributes=None if scope is None else {KEY: scope}
            )
            for n in range(records_per_placement + number):
                body = _tagged(BODIES[(n + number) % len(BODIES)], tag)
                attributes: dict[str, AnyValue] = {"seq": n}
                if record is not None:
                    attributes[KEY] = record
                logger.emit(body=body, attributes=attributes)
                self.expected.add(first_present(record, scope, resource), body)

    def flush_and_shut_down(self) -> None:
        for provider in self.providers.values():
            assert provider.force_flush(30_000)
            provider.shutdown()


def flush_all_at_once(senders: list[SdkSenders]) -> None:
    """Flush every provider of every sender from its own thread, so their exports overlap."""
    providers = [provider for sender in senders for provider in sender.providers.values()]
    with ThreadPoolExecutor(len(providers)) as pool:
        flushed = list(pool.map(lambda provider: provider.force_flush(30_000), providers))
    assert all(flushed)
    for provider in providers:
        provider.shutdown()


def _tagged(body: AnyValue, tag: str) -> AnyValue:
    if not tag:
        return body
    if isinstance(body, str):
        return f"{body} [{tag}]"
    assert isinstance(body, dict)
    return {**body, "tag": tag}
