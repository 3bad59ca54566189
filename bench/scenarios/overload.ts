import { randomUUID } from "node:crypto";
import { RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { mintToken } from "../../gateway/src/token.ts";
import { driveLoad } from "../harness/drive.ts";
import { JWT_SECRET } from "../harness/platform.ts";
import { check, median, type RunResult, repeated } from "../harness/results.ts";
import { type BenchContext, meter, origin, type Scenario } from "../harness/scenario.ts";
import { sendOnce } from "../harness/send-once.ts";
import { encodeRequest } from "../harness/wire.ts";
import { GET_RATE } from "./get-rate.ts";

/** Callers, each far below the gateway's default per-subject limit at 150% of peak. */
const SUBJECTS = 200;
const PEAK_CONCURRENCY = 64;
const OVERLOAD = 1.5;
/** The callers' deadline: an answer after it is useless, so only answers within it are goodput. */
const DEADLINE_MS = 1_000;
/** "Quickly": a rejection must come back within this (p99), far from the callers' deadline. */
const QUICK_REJECTION_MS = 250;
const REJECTIONS = ["RESOURCE_EXHAUSTED", "UNAVAILABLE"];
/**
 * HTTP/2 connections per generator worker. The gateway lets each connection open at most
 * MAX_CONCURRENT_STREAMS (100) streams and a client queues the rest on its own side, out of the
 * gateway's sight; 200 callers would hold a connection each. With enough connections the whole
 * backlog reaches the gateway, which is where the target expects it to be refused.
 */
const CONNECTIONS_PER_WORKER = 8;

export const overloadScenario: Scenario = {
  name: "overload",
  title: "Overload: the gateway at 150% of its peak, default limits",
  expectedS: 70,
  async run(ctx: BenchContext) {
    const { platform } = ctx;
    // The gateway as deployed: default rate limits and admission, in front of the shared services.
    const gateway = await platform.start(
      await platform.gatewayOptions("gateway-default-limits", {}),
    );
    const rate = await platform.rate();
    const requests = await Promise.all(
      Array.from({ length: SUBJECTS }, async () =>
        encodeRequest("connect-proto", RateService.method.getRate, GET_RATE, {
          authorization: `Bearer ${await mintToken({ sub: randomUUID(), secret: JWT_SECRET })}`,
          "connect-timeout-ms": String(DEADLINE_MS),
        }),
      ),
    );
    const sample = await sendOnce(origin(gateway), requests[0] as (typeof requests)[0]);
    if (sample !== "OK") throw new Error(`the overload payload earns ${sample}`);
    const processes = meter(gateway, rate);
    const common = {
      origin: origin(gateway),
      requests,
      workers: ctx.generatorWorkers,
      connectionsPerWorker: CONNECTIONS_PER_WORKER,
      warmupMs: ctx.warmupS * 1000,
      timeoutMs: 10_000,
      deadlineMs: DEADLINE_MS,
      processes,
    };

    const peakRuns: RunResult[] = [];
    for (let i = 0; i < ctx.repetitions; i++) {
      const done = ctx.progress.step("peak: closed loop", (ctx.warmupS + ctx.durationS) * 1000);
      peakRuns.push(
        await driveLoad({
          ...common,
          mode: "closed",
          concurrency: PEAK_CONCURRENCY,
          durationMs: ctx.durationS * 1000,
        }).finally(done),
      );
    }
    const peak = median(peakRuns.map((r) => r.throughput));
    const offered = peak * OVERLOAD;
    const overloadRuns: RunResult[] = [];
    for (let i = 0; i < ctx.repetitions; i++) {
      const durationMs = 2 * ctx.durationS * 1000;
      const done = ctx.progress.step(
        `${OVERLOAD * 100}% of peak: open loop @ ${Math.round(offered)}/s`,
        durationMs + ctx.warmupS * 1000,
      );
      overloadRuns.push(
        await driveLoad({ ...common, mode: "open", rate: offered, durationMs }).finally(done),
      );
    }

    // throughput counts OK answers within the deadline: later ones are LATE.
    const goodput = median(overloadRuns.map((r) => r.throughput));
    const failures = (r: RunResult) =>
      Object.entries(r.statuses).filter(([status]) => status !== "OK");
    const notOk = overloadRuns.reduce((n, r) => n + failures(r).reduce((m, [, c]) => m + c, 0), 0);
    const rejected = overloadRuns.reduce(
      (n, r) => n + REJECTIONS.reduce((m, s) => m + (r.statuses[s] ?? 0), 0),
      0,
    );
    const rejectionP99 = median(
      overloadRuns.map((r) =>
        Math.max(0, ...REJECTIONS.map((s) => r.latencyByStatus?.[s]?.p99 ?? 0)),
      ),
    );
    const okP99 = median(overloadRuns.map((r) => r.latencyByStatus?.OK?.p99 ?? Number.NaN));
    const others: Record<string, number> = {};
    for (const [status, n] of overloadRuns.flatMap(failures)) {
      if (!REJECTIONS.includes(status)) others[status] = (others[status] ?? 0) + n;
    }
    return {
      runs: [
        repeated(`peak: closed loop, ${PEAK_CONCURRENCY} in flight`, peakRuns),
        repeated(`${OVERLOAD * 100}% of peak: open loop`, overloadRuns),
      ],
      targets: [
        check(
          "Overload at 150% of peak: goodput ≥ 90% of peak",
          `${Math.round(goodput)} OK/s at ${Math.round(offered)}/s offered vs peak ${Math.round(peak)}/s`,
          goodput / peak,
          ">=",
          0.9,
          "see the overload notes",
        ),
        check(
          "Overload: excess rejected with RESOURCE_EXHAUSTED or UNAVAILABLE, not left to time out",
          notOk === 0
            ? "every call succeeded within its deadline: no excess to reject"
            : `${rejected} of ${notOk} calls without a timely OK were RESOURCE_EXHAUSTED/UNAVAILABLE; the others: ${JSON.stringify(others)}`,
          notOk === 0 ? 1 : rejected / notOk,
          ">=",
          0.99,
          "see the overload notes",
        ),
        check(
          `Overload: rejections come back quickly (p99 ≤ ${QUICK_REJECTION_MS} ms)`,
          rejected > 0
            ? `rejection p99 ${rejectionP99.toFixed(1)} ms; successes p99 ${okP99.toFixed(1)} ms`
            : notOk > 0
              ? `nothing was rejected: the excess waited (successes p99 ${okP99.toFixed(1)} ms)`
              : "every call succeeded within its deadline: no excess to reject",
          rejected > 0 ? rejectionP99 : notOk > 0 ? Number.POSITIVE_INFINITY : 0,
          "<=",
          QUICK_REJECTION_MS,
          "see the overload notes",
        ),
      ],
      notes: [
        `A gateway with its default settings (per-subject rate limit included) in front of the shared rate service; ${SUBJECTS} signed-in callers (one token each, round-robin) call GetRate over Connect binary with a ${DEADLINE_MS} ms deadline (connect-timeout-ms). Goodput counts OK answers within that deadline; an answer after it counts as LATE, whatever its status.`,
        `Peak: the Node generator closed-loop with ${PEAK_CONCURRENCY} calls in flight. Overload: the same generator open-loop at ${OVERLOAD}× that peak for ${2 * ctx.durationS} s; latency from the scheduled send time; a call unanswered after 10 s counts as TIMEOUT. The generator shares the 2 cores (its CPU is in the table).`,
      ],
    };
  },
};
