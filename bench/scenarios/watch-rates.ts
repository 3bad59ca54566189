import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { startFakeUpstream } from "../../services/rate/test/fake-upstream.ts";
import { combineGenerators } from "../harness/drive.ts";
import { createLatencyHistogram, recordMs, summarize } from "../harness/histogram.ts";
import { BENCH_REDIS_URL, benchRedisKey } from "../harness/platform.ts";
import { createUsageMeter } from "../harness/proc-stats.ts";
import { check, median, type RunResult, repeated } from "../harness/results.ts";
import type { Runnable } from "../harness/runnable.ts";
import type { BenchContext, Scenario } from "../harness/scenario.ts";
import type { WatchArrivals, WatchPlan } from "../harness/watch-worker.ts";

const workerEntry = new URL("../harness/watch-worker.ts", import.meta.url).pathname;
const SUBSCRIBERS = 1_000;
/** Subscriber processes; each holds its streams on one HTTP/2 connection. */
const WORKERS = 4;
const REFRESHES_PER_REPETITION = 5;

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function startSubscribers(plan: Omit<WatchPlan, "streams">): Promise<ChildProcess[]> {
  const workers = Array.from({ length: WORKERS }, () =>
    spawn(process.execPath, [workerEntry], { stdio: ["ignore", "inherit", "inherit", "ipc"] }),
  );
  await Promise.all(workers.map((w) => once(w, "message")));
  await Promise.all(
    workers.map((w) => {
      const subscribed = once(w, "message");
      w.send({ ...plan, streams: SUBSCRIBERS / WORKERS } satisfies WatchPlan);
      return subscribed;
    }),
  );
  return workers;
}

export const watchRatesScenario: Scenario = {
  name: "watch-rates",
  title: "WatchRates: 1,000 subscribers, delay from a refresh to each update",
  expectedS: 50,
  async run(ctx: BenchContext) {
    // A rate service of its own, refreshing every second from an upstream whose price we move.
    const upstream = await startFakeUpstream();
    let workers: ChildProcess[] = [];
    let rate: Runnable | undefined;
    try {
      rate = await ctx.platform.start({
        name: "rate-watch",
        entry: "services/rate/src/main.ts",
        env: {
          RATES_UPSTREAM_URL: upstream.url,
          REDIS_URL: BENCH_REDIS_URL,
          // Its own Redis key: no other rate process may refresh on its behalf.
          RATES_REDIS_KEY: benchRedisKey("watch"),
          RATES_TTL_SECONDS: "1",
        },
      });
      const subscribing = ctx.progress.step(`opening ${SUBSCRIBERS} WatchRates streams`);
      workers = await startSubscribers({
        address: rate.address,
        base: "BTC",
        quotes: ["USD"],
      }).finally(subscribing);

      /** Resolves at the arrival of the next upstream fetch, as seen by the fake upstream. */
      const nextFetch = async () => {
        const seen = upstream.state.requests;
        while (upstream.state.requests === seen) await sleep(1);
        return now();
      };
      const pids: Record<string, number> = { [rate.name]: rate.pid };
      workers.forEach((w, i) => {
        pids[`generator#${i}`] = w.pid as number;
      });
      const meter = createUsageMeter(pids);
      const refreshes: { value: string; at: number; rep: number }[] = [];
      const usages = [];
      let price = 90_000;
      for (let rep = 0; rep < ctx.repetitions; rep++) {
        const done = ctx.progress.step(
          `refresh → update, repetition ${rep + 1}`,
          REFRESHES_PER_REPETITION * 2_000,
        );
        meter.start();
        // The price changes just after a fetch, so that the next fetch is the one carrying it.
        await nextFetch();
        for (let k = 0; k < REFRESHES_PER_REPETITION; k++) {
          const value = String(++price);
          upstream.setValue("usd", value);
          refreshes.push({ value, at: await nextFetch(), rep });
        }
        await sleep(1_000);
        usages.push(combineGenerators(meter.stop()));
        done();
      }
      const results = await Promise.all(
        workers.map(async (w) => {
          const finished = once(w, "message") as Promise<
            [{ arrivals: WatchArrivals; failures: number }]
          >;
          w.send("finish");
          return (await finished)[0];
        }),
      );
      const streams = results.flatMap((r) => r.arrivals);
      const failures = results.reduce((n, r) => n + r.failures, 0);

      const reps: RunResult[] = [];
      for (let rep = 0; rep < ctx.repetitions; rep++) {
        const histogram = createLatencyHistogram();
        let missed = 0;
        for (const refresh of refreshes.filter((r) => r.rep === rep)) {
          for (const arrivals of streams) {
            const seen = arrivals.find(([p]) => Number(p) === Number(refresh.value));
            if (seen) recordMs(histogram, seen[1] - refresh.at);
            else missed++;
          }
        }
        const delivered = histogram.totalCount;
        reps.push({
          tool: "node-http2",
          mode: "open",
          throughput: delivered / REFRESHES_PER_REPETITION,
          statuses: { delivered, missed, "stream errors": failures },
          latency: summarize(histogram),
          usage: usages[rep] ?? {},
        });
      }
      const p99 = median(reps.map((r) => r.latency.p99));
      const missed = reps.reduce((n, r) => n + (r.statuses.missed ?? 0), 0);
      return {
        runs: [repeated(`${SUBSCRIBERS} subscribers, delay after a refresh`, reps)],
        targets: [
          check(
            "WatchRates: 1,000 concurrent subscribers receive an update within 100 ms p99 of a refresh",
            `p99 ${p99.toFixed(1)} ms over ${ctx.repetitions}×${REFRESHES_PER_REPETITION} refreshes; ${missed} updates missed, ${failures} streams failed`,
            missed + failures > 0 ? Number.POSITIVE_INFINITY : p99,
            "<=",
            100,
            missed + failures > 0 ? "updates were lost" : "see the WatchRates notes",
          ),
        ],
        notes: [
          `One rate service process (RATES_TTL_SECONDS=1, Redis key of its own) and ${SUBSCRIBERS} WatchRates(BTC→USD) streams from ${WORKERS} grpc-js subscriber processes (${SUBSCRIBERS / WORKERS} streams on one HTTP/2 connection each).`,
          "A refresh's time is when its fetch reached the fake upstream (polled every millisecond, so the delay may read up to ~1 ms short); the delay ends when a subscriber process has decoded the update. OK/s here = updates delivered per refresh.",
        ],
      };
    } finally {
      for (const w of workers) if (w.exitCode === null) w.kill();
      await rate?.stop();
      await upstream.close();
    }
  },
};
