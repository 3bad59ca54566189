import { execFileSync } from "node:child_process";
import { timedCommand } from "../harness/pgbench.ts";
import { BENCH_REDIS_URL } from "../harness/platform.ts";
import { createUsageMeter } from "../harness/proc-stats.ts";
import { type RunResult, repeated } from "../harness/results.ts";
import type { BenchContext, Scenario } from "../harness/scenario.ts";

const REQUESTS = 200_000;
const CLIENTS = 16;

function redisServerPid(): number | undefined {
  try {
    return Number(execFileSync("pgrep", ["-o", "-x", "redis-server"], { encoding: "utf8" }).trim());
  } catch {
    return undefined;
  }
}

/** redis-benchmark's CSV: "GET","rps","avg","min","p50","p95","p99","max" (latencies in ms). */
function parseCsv(output: string) {
  const row = output
    .split("\n")
    .find((line) => line.startsWith('"GET"'))
    ?.split(",")
    .map((cell) => Number(cell.replaceAll('"', "")));
  if (!row) throw new Error(`unexpected redis-benchmark output:\n${output}`);
  const [, rps, , , p50, , p99, max] = row as number[];
  return { rps: rps ?? 0, p50: p50 ?? 0, p99: p99 ?? 0, max: max ?? 0 };
}

/** A context figure for the rate service's cache: what one Redis GET round trip costs here. */
export const redisGetScenario: Scenario = {
  name: "redis-get",
  title: "Reference: redis-benchmark GET on the local Redis",
  expectedS: 15,
  async run(ctx: BenchContext) {
    const url = new URL(BENCH_REDIS_URL);
    if (!["127.0.0.1", "localhost"].includes(url.hostname)) {
      return { runs: [], targets: [], notes: [`Redis at ${url.host} is not local: skipped.`] };
    }
    const pid = redisServerPid();
    const reps: RunResult[] = [];
    for (let i = 0; i < ctx.repetitions; i++) {
      const done = ctx.progress.step(`redis-benchmark GET, ${REQUESTS} requests`);
      const meter = createUsageMeter(pid ? { "redis-server": pid } : {});
      meter.start();
      const startedAt = performance.now();
      const run = await timedCommand("redis-benchmark", [
        ...["-h", url.hostname, "-p", url.port || "6379"],
        ...["-t", "get", "-n", String(REQUESTS), "-c", String(CLIENTS), "-d", "40", "--csv"],
      ]).finally(done);
      const seconds = (performance.now() - startedAt) / 1000;
      const figures = parseCsv(run.output);
      reps.push({
        tool: "redis-benchmark",
        mode: "closed",
        throughput: figures.rps,
        statuses: { requests: REQUESTS },
        // redis-benchmark reports these percentiles only; p90 and p99.9 are not available.
        latency: {
          count: REQUESTS,
          p50: figures.p50,
          p90: Number.NaN,
          p99: figures.p99,
          p999: Number.NaN,
          max: figures.max,
        },
        usage: {
          ...meter.stop(),
          generator: {
            cpuSeconds: run.cpuSeconds,
            cpuCores: run.cpuSeconds / seconds,
            peakRssMb: run.peakRssMb,
          },
        },
      });
    }
    return {
      runs: [repeated(`GET, ${CLIENTS} connections, no pipelining`, reps)],
      targets: [],
      notes: [
        "No target: the figure tells what a network round trip to Redis costs on this machine, next to the cached GetRate that needs none.",
      ],
    };
  },
};
