// Smoke test: a few Exports with known attributes and bodies; every check must pass.
//
//   k6 run -e OTLP_TARGET=127.0.0.1:4317 k6/smoke.js      (or `make k6-smoke`)
//
// Every iteration sends the same 9 records, with the attribute (default service.name) on the
// record, the scope and the resource so all three precedence levels are exercised:
//   checkout  4 records: "order placed" x2, "payment declined", and "order <n> shipped",
//             where n is the iteration number (resource attribute)
//   cart      2 records: "item added", "item removed" (scope attribute beats resource)
//   auth      2 records: "user logged in", "session expired" (record attribute)
//   (missing) 1 record:  "health check" (no attribute anywhere)
// So after N iterations the service counts checkout 4N records / 2+N distinct, cart 2N / 2,
// auth 2N / 2 and the missing label N / 1; tests/test_k6.py asserts exactly that.
import grpc from 'k6/net/grpc';
import exec from 'k6/execution';
import { check } from 'k6';
import {
  HEALTH_METHOD,
  attribute,
  connect,
  countRecords,
  env,
  exportLogs,
  intEnv,
  logRecord,
  resourceLogs,
  scopeLogs,
} from './lib/otlp.js';

const ITERATIONS = intEnv('SMOKE_ITERATIONS', 10);
const KEY = env('ATTRIBUTE_KEY', 'service.name');
const RECORDS_PER_ITERATION = 9;

export const options = {
  scenarios: {
    smoke: { executor: 'shared-iterations', vus: 2, iterations: ITERATIONS, maxDuration: '60s' },
  },
  thresholds: {
    checks: ['rate==1'],
    otlp_export_errors: ['rate==0'],
    otlp_records_sent: [`count==${ITERATIONS * RECORDS_PER_ITERATION}`],
    grpc_req_duration: ['p(95)<1000'],
  },
};

const client = new grpc.Client();
let connected = false;

export function request(n) {
  return {
    resourceLogs: [
      resourceLogs(
        [attribute(KEY, 'checkout')],
        [
          scopeLogs([], [
            logRecord('order placed'),
            logRecord('order placed'),
            logRecord('payment declined'),
            logRecord(`order ${n} shipped`),
          ]),
          scopeLogs([attribute(KEY, 'cart')], [logRecord('item added'), logRecord('item removed')]),
        ],
      ),
      resourceLogs([], [
        scopeLogs([], [
          logRecord('user logged in', [attribute(KEY, 'auth')]),
          logRecord('session expired', [attribute(KEY, 'auth')]),
          logRecord('health check'),
        ]),
      ]),
    ],
  };
}

// The gRPC health service answers SERVING before any Export is sent.
export function setup() {
  const probe = new grpc.Client();
  connect(probe);
  const response = probe.invoke(HEALTH_METHOD, { service: '' }, { timeout: '5s' });
  check(response, {
    'health is SERVING': (r) => r && r.status === grpc.StatusOK && r.message.status === 'SERVING',
  });
  probe.close();
}

export default function () {
  if (!connected) {
    connect(client);
    connected = true;
  }
  const payload = request(exec.scenario.iterationInTest);
  if (countRecords(payload) !== RECORDS_PER_ITERATION) {
    throw new Error('smoke request no longer matches its documented 9 records');
  }
  exportLogs(client, payload, RECORDS_PER_ITERATION);
}
