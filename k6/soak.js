// Soak test: a steady arrival rate for a long time, to catch what only time shows: memory
// that grows window after window, latency that creeps up, a queue that never quite drains.
//
//   k6 run -e OTLP_TARGET=127.0.0.1:4317 k6/soak.js      (or `make k6-soak`)
//
// Environment (all optional; the request knobs are those of load.js):
//   OTLP_TARGET          host:port of OTLP/gRPC                      127.0.0.1:4317
//   RATE                 Exports started per second                  50
//   DURATION             how long                                    30m
//   MAX_VUS              most concurrent Exports k6 may hold         50
//   RECORDS_PER_REQUEST, PLACEMENT, VALUES, BODIES, ATTRIBUTE_KEY   as in load.js
//   P99_MS, MAX_ERROR_RATE                                            250, 0.001
import { env, intEnv, repeatedExport } from './lib/otlp.js';

const RECORDS = intEnv('RECORDS_PER_REQUEST', 100);
const PLACEMENT = env('PLACEMENT', 'record');

export const options = {
  scenarios: {
    soak: {
      // An open model: requests keep arriving at RATE whatever the latency, as they do from
      // a fleet; k6 reports the iterations it could not start as dropped_iterations.
      executor: 'constant-arrival-rate',
      rate: intEnv('RATE', 50),
      timeUnit: '1s',
      duration: env('DURATION', '30m'),
      preAllocatedVUs: 10,
      maxVUs: intEnv('MAX_VUS', 50),
    },
  },
  thresholds: {
    otlp_export_errors: [`rate<${env('MAX_ERROR_RATE', '0.001')}`],
    grpc_req_duration: [`p(99)<${env('P99_MS', '250')}`],
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
