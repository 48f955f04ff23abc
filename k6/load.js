// Load test: ramping virtual users, each sending Exports back to back (a closed loop, as a
// fleet of collectors with a fixed number of in-flight requests does).
//
//   k6 run -e OTLP_TARGET=127.0.0.1:4317 k6/load.js      (or `make k6-load`)
//
// Environment (all optional):
//   OTLP_TARGET          host:port of OTLP/gRPC                      127.0.0.1:4317
//   VUS                  virtual users at the plateau                8
//   RAMP, HOLD           ramp-up and plateau durations               30s, 60s
//   RAMP_DOWN            ramp-down duration                          5s
//   RECORDS_PER_REQUEST  log records in each Export                  100
//   PLACEMENT            where the attribute sits: record, scope, resource   record
//   VALUES               distinct attribute values per request       20
//   BODIES               distinct bodies per request                 50
//   ATTRIBUTE_KEY        the attribute the service counts by         service.name
//   P95_MS, P99_MS       latency thresholds, milliseconds            250, 500
//   MAX_ERROR_RATE       failed Exports tolerated, as a fraction     0.01
import { env, intEnv, repeatedExport } from './lib/otlp.js';

const VUS = intEnv('VUS', 8);
const RECORDS = intEnv('RECORDS_PER_REQUEST', 100);
const PLACEMENT = env('PLACEMENT', 'record');

export const options = {
  scenarios: {
    load: {
      executor: 'ramping-vus',
      startVUs: 1,
      stages: [
        { duration: env('RAMP', '30s'), target: VUS },
        { duration: env('HOLD', '60s'), target: VUS },
        { duration: env('RAMP_DOWN', '5s'), target: 0 },
      ],
      gracefulRampDown: '5s',
    },
  },
  thresholds: {
    otlp_export_errors: [`rate<${env('MAX_ERROR_RATE', '0.01')}`],
    grpc_req_duration: [`p(95)<${env('P95_MS', '250')}`, `p(99)<${env('P99_MS', '500')}`],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

const sender = repeatedExport(RECORDS, PLACEMENT);

export function setup() {
  sender.announce();
}

export default function () {
  sender.send();
}
