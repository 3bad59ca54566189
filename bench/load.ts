// `npm run load -- --rate 50 --duration 60s [--target http://127.0.0.1:8080]`: realistic mixed
// traffic through the gateway for dashboards and canary rehearsals. Open loop (arrivals at the
// given rate whatever the answers), loopback targets only, bounded in rate, time and count.
import { parseArgs } from "node:util";
import { DEV_JWT_SECRET } from "../gateway/src/token.ts";
import { checkSettings, LIMITS } from "./load/limits.ts";
import { createLoadSummary, renderSummary } from "./load/summary.ts";
import { codeName, createTraffic } from "./load/traffic.ts";

const { values } = parseArgs({
  options: {
    rate: { type: "string", default: "50" },
    duration: { type: "string", default: "60s" },
    target: { type: "string", default: "http://127.0.0.1:8080" },
    "max-requests": { type: "string" },
    json: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  console.log(`npm run load -- [--rate N/s] [--duration 60s|5m|1h] [--target http://127.0.0.1:8080]
                [--max-requests N] [--json]
Signs up users, mints their tokens (JWT_SECRET, else the development secret), then sends
sign-ups, deposits, orders, rate reads and rate streams over Connect JSON, Connect binary,
gRPC-web and gRPC. At most ${LIMITS.maxRate}/s, ${LIMITS.maxDurationS / 3_600} h, ${LIMITS.maxRequests.toLocaleString("en-US")} calls; loopback only.`);
  process.exit(0);
}

let settings: ReturnType<typeof checkSettings>;
try {
  settings = checkSettings({
    target: values.target,
    rate: values.rate,
    duration: values.duration,
    maxRequests: values["max-requests"],
  });
} catch (err) {
  console.error((err as Error).message);
  process.exit(2);
}

const traffic = createTraffic(settings.target.origin, {
  secret: process.env.JWT_SECRET || DEV_JWT_SECRET,
  issuer: process.env.JWT_ISSUER || undefined,
  audience: process.env.JWT_AUDIENCE || undefined,
});
const summary = createLoadSummary();
const interval = 1000 / settings.rate;
const total = Math.min(settings.maxRequests, Math.floor(settings.rate * settings.durationS));
const startedAt = performance.now();
let inFlight = 0;
let answered = 0;
let failed = 0;
let stopping = false;
process.once("SIGINT", () => {
  stopping = true;
});

const report = setInterval(() => {
  const elapsed = (performance.now() - startedAt) / 1000;
  console.error(
    `[load ${elapsed.toFixed(0)}s] ${answered} answered (${failed} not OK), ${inFlight} in flight, ${traffic.streams()} streams open`,
  );
}, 5_000);

for (let i = 0; i < total && !stopping; i++) {
  // Latency counts from the scheduled time, so a stalled gateway shows as slow, not as idle.
  const scheduledAt = startedAt + i * interval;
  const wait = scheduledAt - performance.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  if (inFlight >= LIMITS.maxInFlight) {
    summary.drop();
    continue;
  }
  inFlight++;
  const { rpc, done } = traffic.next();
  done
    .then(
      () => summary.record(rpc, "OK", performance.now() - scheduledAt),
      (err: unknown) => {
        failed++;
        summary.record(rpc, codeName(err), performance.now() - scheduledAt);
      },
    )
    .finally(() => {
      inFlight--;
      answered++;
    });
}
traffic.close();
while (inFlight > 0) await new Promise((resolve) => setTimeout(resolve, 50));
clearInterval(report);
const seconds = (performance.now() - startedAt) / 1000;
const result = summary.result();
console.log(
  values.json ? JSON.stringify({ seconds, ...result }, null, 2) : renderSummary(result, seconds),
);
process.exit(0);
