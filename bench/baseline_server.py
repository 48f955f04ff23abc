"""The deliberately straightforward counter the service is measured against.

It does what a first version would: decode the whole request into the OTLP object model,
scan each record's attribute list (record > scope > resource), render the value to str
and add the rendered body to a per-value Python set. It counts one window spanning its
whole life and prints it, in the service's JSON report shape, when told to stop.

With --transport-only it is the third yardstick instead: the same grpc.aio server taking the
request as raw bytes and answering at once, so what it costs is gRPC, HTTP/2, the event loop and
the kernel alone. It counts requests; its report's records are requests x --records-per-request
(the harness's workload is fixed), so the harness's reported = acknowledged check still holds.

With --http-listen it also serves OTLP/HTTP protobuf (POST /v1/logs) the plain aiohttp way: a
handler that reads the body, decodes and counts it as above (or, with --transport-only, reads it
and answers at once), on an application with aiohttp's defaults.

With --processes N, N-1 more processes serve the same ports beside it (SO_REUSEPORT; the kernel
spreads connections over them), each its own grpc.aio server: what grpc.aio itself does with
its connections spread over processes, the yardstick for the service's --processes. It says it
serves once they all do, and stops them when told to stop; its report is its own share.

Run: python -m bench.baseline_server --listen 127.0.0.1:0 [--attribute-key service.name]
     python -m bench.baseline_server --listen 127.0.0.1:0 --transport-only
     python -m bench.baseline_server --listen 127.0.0.1:0 --http-listen 127.0.0.1:0
     python -m bench.baseline_server --listen 127.0.0.1:0 --transport-only --processes 2
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shlex
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import grpc.aio
from aiohttp import web
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
_MAX_RECEIVE_BYTES = 64 * 1024 * 1024  # the OTLP recommendation, as the service uses
MISSING_LABEL = "unknown"


class BaselineCounter:
    """Distinct bodies and records per attribute value, the plain way."""

    def __init__(self, attribute_key: str) -> None:
        self.attribute_key = attribute_key
        self.bodies: defaultdict[str | None, set[str]] = defaultdict(set)
        self.records: defaultdict[str | None, int] = defaultdict(int)

    def count(self, request: ExportLogsServiceRequest) -> None:
        for resource_logs in request.resource_logs:
            resource_value = self.find(resource_logs.resource.attributes)
            for scope_logs in resource_logs.scope_logs:
                scope_value = self.find(scope_logs.scope.attributes)
                inherited = scope_value if scope_value is not None else resource_value
                for record in scope_logs.log_records:
                    value = self.find(record.attributes)
                    if value is None:
                        value = inherited
                    self.bodies[value].add(render(record.body))
                    self.records[value] += 1

    def find(self, attributes: Sequence[KeyValue]) -> str | None:
        for attribute in attributes:
            if attribute.key == self.attribute_key:
                return render(attribute.value)
        return None

    def report(self, started: datetime, ended: datetime) -> dict[str, object]:
        ordered = sorted(
            self.records.items(),
            key=lambda item: (-len(self.bodies[item[0]]), item[0] or ""),
        )
        values = [
            {
                "value": MISSING_LABEL if value is None else value,
                "missing": value is None,
                "distinct_messages": len(self.bodies[value]),
                "records": records,
            }
            for value, records in ordered
        ]
        return {
            "event": "window_report",
            "attribute_key": self.attribute_key,
            "window_start": _timestamp(started),
            "window_end": _timestamp(ended),
            "partial": True,
            "records": sum(self.records.values()),
            "distinct_messages": sum(len(bodies) for bodies in self.bodies.values()),
            "values": values,
        }


def render(value: AnyValue) -> str:
    """AnyValue as text, by the service's rules (structured values as compact JSON)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return repr(value.double_value)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind is None:
        return ""
    return json.dumps(MessageToDict(value), sort_keys=True, separators=(",", ":"))


async def serve(
    listen: str,
    attribute_key: str,
    transport_records: int | None = None,
    http_listen: str | None = None,
    siblings: Sequence[str] = (),
) -> None:
    """`siblings`: the command line of each other process to serve the same ports, to which
    `--listen HOST:PORT` (and `--http-listen`) with this one's ports are added."""
    counter = BaselineCounter(attribute_key)

    async def export(request: ExportLogsServiceRequest, _: object) -> ExportLogsServiceResponse:
        counter.count(request)
        return ExportLogsServiceResponse()

    async def receive_only(_request: bytes, _: object) -> ExportLogsServiceResponse:
        counter.records[None] += transport_records or 0
        return ExportLogsServiceResponse()

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", _MAX_RECEIVE_BYTES)])
    handler: grpc.RpcMethodHandler[Any, ExportLogsServiceResponse]
    if transport_records is None:
        handler = grpc.unary_unary_rpc_method_handler(
            export,
            request_deserializer=ExportLogsServiceRequest.FromString,
            response_serializer=ExportLogsServiceResponse.SerializeToString,
        )
    else:
        handler = grpc.unary_unary_rpc_method_handler(
            receive_only,
            request_deserializer=None,
            response_serializer=ExportLogsServiceResponse.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(_SERVICE, {"Export": handler})]
    )
    port = server.add_insecure_port(listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    started = datetime.now(UTC)
    await server.start()
    http_runner = None
    http_port = None
    if http_listen is not None:
        http_runner = web.AppRunner(_http_app(counter, transport_records))
        await http_runner.setup()
        host, _, http_port_text = http_listen.rpartition(":")
        await web.TCPSite(http_runner, host, int(http_port_text), reuse_port=True).start()
        http_port = int(http_runner.addresses[0][1])
    beside = await _start_siblings(siblings, listen, port, http_listen, http_port)
    _log("serving", grpc_port=port, http_port=http_port, processes=1 + len(beside))
    await stop.wait()
    _log("stopping")
    await asyncio.gather(*(_stop_sibling(sibling) for sibling in beside))
    if http_runner is not None:
        await http_runner.cleanup()
    await server.stop(grace=5)
    print(json.dumps(counter.report(started, datetime.now(UTC))), flush=True)


@dataclass
class _Sibling:
    process: asyncio.subprocess.Process
    # Reads its stderr on, so it never blocks on a full pipe.
    drain: asyncio.Task[None] | None = None


async def _start_siblings(
    siblings: Sequence[str],
    listen: str,
    port: int,
    http_listen: str | None,
    http_port: int | None,
) -> list[_Sibling]:
    """Start each sibling on these ports (grpc sets SO_REUSEPORT on its listeners, the HTTP
    site above too) and wait until it serves; if one does not, stop those started."""
    ports = ["--listen", f"{listen.rpartition(':')[0]}:{port}"]
    if http_listen is not None and http_port is not None:
        ports += ["--http-listen", f"{http_listen.rpartition(':')[0]}:{http_port}"]
    started: list[_Sibling] = []
    try:
        for command in siblings:
            process = await asyncio.create_subprocess_exec(
                *shlex.split(command), *ports,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            sibling = _Sibling(process)
            started.append(sibling)
            assert process.stderr is not None  # PIPE
            while b'"serving"' not in (line := await process.stderr.readline()):
                if not line:
                    raise RuntimeError(f"a sibling server did not start: {command}")
            sibling.drain = asyncio.create_task(_drain(process.stderr))
    except BaseException:
        await asyncio.gather(*(_stop_sibling(sibling) for sibling in started))
        raise
    return started


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(1 << 16):
        pass


async def _stop_sibling(sibling: _Sibling) -> None:
    if sibling.process.returncode is None:
        sibling.process.terminate()
    await sibling.process.wait()
    if sibling.drain is not None:
        await sibling.drain


def _http_app(counter: BaselineCounter, transport_records: int | None) -> web.Application:
    """POST /v1/logs, protobuf only: what a first aiohttp version of the service would do."""
    answer = ExportLogsServiceResponse().SerializeToString()

    async def export(request: web.Request) -> web.Response:
        body = await request.read()
        if transport_records is None:
            counter.count(ExportLogsServiceRequest.FromString(body))
        else:
            counter.records[None] += transport_records
        return web.Response(body=answer, content_type="application/x-protobuf")

    app = web.Application(client_max_size=_MAX_RECEIVE_BYTES)
    app.router.add_post("/v1/logs", export)
    return app


def _log(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), file=sys.stderr, flush=True)


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port for gRPC")
    parser.add_argument("--attribute-key", default="service.name")
    parser.add_argument(
        "--transport-only", action="store_true", help="answer at once; decode and count nothing"
    )
    parser.add_argument("--records-per-request", type=int, default=1000)
    parser.add_argument("--http-listen", help="host:port for OTLP/HTTP protobuf too (0: any)")
    parser.add_argument(
        "--processes", type=int, default=1, help="processes serving the same ports (SO_REUSEPORT)"
    )
    args = parser.parse_args(argv)
    transport_records = args.records_per_request if args.transport_only else None
    sibling = [
        sys.executable, "-m", "bench.baseline_server", "--attribute-key", args.attribute_key,
        "--records-per-request", str(args.records_per_request),
        *(["--transport-only"] if args.transport_only else []),
    ]  # fmt: skip
    siblings = [shlex.join(sibling)] * max(0, args.processes - 1)
    asyncio.run(
        serve(args.listen, args.attribute_key, transport_records, args.http_listen, siblings)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
