// OTLP/gRPC helpers shared by the k6 scripts: connecting with server reflection (no .proto
// files needed), building ExportLogsServiceRequest payloads in the protobuf JSON mapping,
// and one Export call with its checks and metrics.
import grpc from 'k6/net/grpc';
import { check } from 'k6';
import { Counter, Rate } from 'k6/metrics';

export const EXPORT_METHOD = 'opentelemetry.proto.collector.logs.v1.LogsService/Export';
export const HEALTH_METHOD = 'grpc.health.v1.Health/Check';
export const PLACEMENTS = ['record', 'scope', 'resource'];

// Records acknowledged by the server, and Exports that failed (any non-OK status, including
// UNAVAILABLE from a full queue: k6 does not retry, so to a load test it is an error).
export const recordsSent = new Counter('otlp_records_sent');
export const exportErrors = new Rate('otlp_export_errors');

export function env(name, fallback) {
  const value = __ENV[name];
  return value === undefined || value === '' ? fallback : value;
}

export function intEnv(name, fallback) {
  const value = Number.parseInt(env(name, String(fallback)), 10);
  if (!Number.isFinite(value) || value < 1) {
    throw new Error(`${name} must be a positive integer, got ${__ENV[name]}`);
  }
  return value;
}

export function target() {
  return env('OTLP_TARGET', '127.0.0.1:4317');
}

// Connect once per VU; reflection tells k6 the message types of LogsService and Health.
export function connect(client) {
  client.connect(target(), { plaintext: true, reflect: true, timeout: '10s' });
}

export function attribute(key, value) {
  return { key, value: { stringValue: String(value) } };
}

export function logRecord(body, attributes = []) {
  return { severityNumber: 9, severityText: 'INFO', body: { stringValue: body }, attributes };
}

export function resourceLogs(resourceAttributes, scopes) {
  return { resource: { attributes: resourceAttributes }, scopeLogs: scopes };
}

export function scopeLogs(scopeAttributes, records) {
  return { scope: { name: 'k6', version: '1', attributes: scopeAttributes }, logRecords: records };
}

function body(index) {
  return `GET /api/v1/orders/${index} answered 200 in ${(index % 97) + 3} ms`;
}

// A request of `records` records whose attribute `key` takes `values` distinct values, placed
// on the record, its scope or its resource; record i has value `value-(i % values)` and body
// number (i % bodies), so each value sees up to `bodies` distinct bodies.
export function buildRequest({ records, values, bodies, placement, key }) {
  if (!PLACEMENTS.includes(placement)) {
    throw new Error(`PLACEMENT must be one of ${PLACEMENTS.join(', ')}, got ${placement}`);
  }
  const byValue = [];
  for (let v = 0; v < Math.min(values, records); v += 1) {
    byValue.push([]);
  }
  for (let i = 0; i < records; i += 1) {
    const own = placement === 'record' ? [attribute(key, `value-${i % values}`)] : [];
    byValue[i % byValue.length].push(logRecord(body(i % bodies), own));
  }
  const host = [attribute('host.name', 'k6')];
  if (placement === 'record') {
    return { resourceLogs: [resourceLogs(host, [scopeLogs([], byValue.flat())])] };
  }
  if (placement === 'scope') {
    const scopes = byValue.map((group, v) => scopeLogs([attribute(key, `value-${v}`)], group));
    return { resourceLogs: [resourceLogs(host, scopes)] };
  }
  return {
    resourceLogs: byValue.map((group, v) =>
      resourceLogs([...host, attribute(key, `value-${v}`)], [scopeLogs([], group)]),
    ),
  };
}

export function countRecords(request) {
  let count = 0;
  for (const resource of request.resourceLogs) {
    for (const scope of resource.scopeLogs) {
      count += scope.logRecords.length;
    }
  }
  return count;
}

// One Export: checks the status and that no record was rejected, counts what was accepted.
export function exportLogs(client, request, records) {
  const response = client.invoke(EXPORT_METHOD, request, { timeout: '10s' });
  const ok = check(response, {
    'Export status is OK': (r) => r && r.status === grpc.StatusOK,
    'no log record rejected': (r) =>
      r && r.status === grpc.StatusOK &&
      (!r.message.partialSuccess || Number(r.message.partialSuccess.rejectedLogRecords || 0) === 0),
  });
  exportErrors.add(!ok);
  if (ok) {
    recordsSent.add(records);
  }
  return ok;
}

// One request built from the environment (VALUES, BODIES, ATTRIBUTE_KEY), sent again and again
// over one connection per VU: what the load and soak scripts share. Call it in the init
// context (grpc.Client must be created there).
export function repeatedExport(records, placement) {
  const payload = buildRequest({
    records,
    values: intEnv('VALUES', 20),
    bodies: intEnv('BODIES', 50),
    placement,
    key: env('ATTRIBUTE_KEY', 'service.name'),
  });
  const client = new grpc.Client();
  let connected = false;
  return {
    // One log line with the request as sent, so a runner can state its size (k6/run.py does).
    announce() {
      console.log(JSON.stringify({ otlp_request: payload, records, placement }));
    },
    send() {
      if (!connected) {
        connect(client);
        connected = true;
      }
      exportLogs(client, payload, records);
    },
  };
}
