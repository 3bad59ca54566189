import { existsSync } from "node:fs";
import { AccountService } from "@coinmesh/proto/order/v1/account_pb";
import { RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import { createFundedUsers } from "../harness/accounts.ts";
import { BENCH_REDIS_URL, benchRedisKey } from "../harness/platform.ts";
import { check, median, repeated } from "../harness/results.ts";
import type { Runnable, RunnableOptions } from "../harness/runnable.ts";
import {
  type BenchContext,
  closedLoop,
  meter,
  origin,
  type Scenario,
  withServerCodes,
} from "../harness/scenario.ts";
import { sendOnce } from "../harness/send-once.ts";
import { encodeRequest, rawGrpcRequest, type WireRequest } from "../harness/wire.ts";
import { ECHO_PATH } from "../reference/echo-server.ts";
import { GET_RATE } from "./get-rate.ts";

const STARTS = 5;
const root = new URL("../..", import.meta.url).pathname;
/** About the size of a GetRate response. */
const ECHO_PAYLOAD = Buffer.alloc(40, 1);
const RSS_LIMIT_MB = 150;
const SEMI_SPACE_MB = 16;

/** Peak RSS per process over every run of the scenarios that ran before this one. */
function peaksSoFar(ctx: BenchContext): Map<string, { mb: number; where: string }> {
  const peaks = new Map<string, { mb: number; where: string }>();
  for (const scenario of ctx.completed) {
    for (const run of scenario.runs) {
      for (const [name, usage] of Object.entries(run.median.usage)) {
        // Only coinmesh's own processes: not the generator, Redis or the machine-wide figures.
        if (["generator", "redis-server", "machine", "steal"].includes(name)) continue;
        const seen = peaks.get(name);
        if (!seen || usage.peakRssMb > seen.mb) {
          peaks.set(name, { mb: usage.peakRssMb, where: `${scenario.name}: ${run.label}` });
        }
      }
    }
  }
  return peaks;
}

export const footprintScenario: Scenario = {
  name: "footprint",
  title: "Footprint: start to SERVING on real Postgres, peak RSS under load",
  expectedS: 60,
  async run(ctx: BenchContext) {
    const { platform } = ctx;
    const [echo, rate, user, order] = await Promise.all([
      platform.echo(),
      platform.rate(),
      platform.user(),
      platform.order(),
    ]);
    const [userDb, orderDb] = await Promise.all([
      platform.database("user"),
      platform.database("order"),
    ]);
    const upstream = await platform.upstream();

    // Start times: a second instance of each, migrations already applied, spawn → SERVING.
    const starters: RunnableOptions[] = [
      { name: "user", entry: "services/user/src/main.ts", env: { DATABASE_URL: userDb.url } },
      {
        name: "order",
        entry: "services/order/src/main.ts",
        env: {
          DATABASE_URL: orderDb.url,
          USER_SERVICE_ADDR: user.address,
          RATE_SERVICE_ADDR: rate.address,
        },
      },
      {
        name: "rate",
        entry: "services/rate/src/main.ts",
        env: {
          RATES_UPSTREAM_URL: upstream.url,
          REDIS_URL: BENCH_REDIS_URL,
          RATES_REDIS_KEY: benchRedisKey("rate"),
        },
      },
    ];
    const startTimes = async (options: RunnableOptions) => {
      const done = ctx.progress.step(`${options.name}: ${STARTS} starts`);
      const times: number[] = [];
      try {
        for (let i = 0; i < STARTS; i++) {
          const started = await platform.start({ ...options, name: `${options.name}-start` });
          times.push(started.startMs);
          await started.stop();
        }
        return times;
      } finally {
        done();
      }
    };
    const withGateway = existsSync(`${root}gateway/src/main.ts`);
    if (withGateway) {
      starters.push(await platform.gatewayOptions("gateway", { RATE_LIMIT_PER_SECOND: "0" }));
    }
    const starts: [string, number[]][] = [];
    for (const options of starters) starts.push([options.name, await startTimes(options)]);
    // The same user service without the telemetry preload: how much of the start is module loading.
    const userStarter = starters.find((s) => s.name === "user") as RunnableOptions;
    const bare = await startTimes({ ...userStarter, withoutTelemetry: true });

    // Load on each process for its peak RSS, on top of what earlier scenarios saw.
    const getRate = encodeRequest("grpc", RateService.method.getRate, GET_RATE);
    const [userId] = await createFundedUsers(user.address, order.address, 1);
    /** label, process, request, and the method its metrics count (none for the echo). */
    const loads: [string, Runnable, WireRequest, string | undefined][] = [
      ["echo under h2load", echo, rawGrpcRequest(ECHO_PATH, ECHO_PAYLOAD), undefined],
      ["rate: GetRate under h2load", rate, getRate, "GetRate"],
      [
        "user: GetUser under h2load",
        user,
        encodeRequest("grpc", UserService.method.getUser, { id: userId }),
        "GetUser",
      ],
      [
        "order: GetBalances under h2load",
        order,
        encodeRequest("grpc", AccountService.method.getBalances, { userId }),
        "GetBalances",
      ],
    ];
    if (withGateway) {
      loads.push([
        "gateway: GetRate (Connect binary) under h2load",
        await platform.gateway(),
        encodeRequest("connect-proto", RateService.method.getRate, GET_RATE),
        "GetRate",
      ]);
    }
    /** One closed-loop run, after checking that the payload earns OK (h2load would not tell). */
    const load = async (target: Runnable, request: WireRequest, method: string | undefined) => {
      const status = await sendOnce(origin(target), request);
      if (status !== "OK") throw new Error(`${target.name}: the load payload earns ${status}`);
      const processes = target.name.startsWith("gateway") ? meter(target, rate) : meter(target);
      const run = () => closedLoop(ctx, target.name, origin(target), request, processes);
      return method ? withServerCodes(target, method, run) : run();
    };
    const runs = [];
    for (const [label, target, request, method] of loads) {
      runs.push(repeated(label, [await load(target, request, method)]));
    }
    // What a smaller young generation would do: the same rate service, one V8 flag apart.
    const rateStarter = starters.find((s) => s.name === "rate") as RunnableOptions;
    const capped = await platform.start({
      ...rateStarter,
      name: "rate (semi-space 16 MB)",
      env: { ...rateStarter.env, NODE_OPTIONS: `--max-semi-space-size=${SEMI_SPACE_MB}` },
    });
    const cappedRun = await load(capped, getRate, "GetRate");
    await capped.stop();
    const peaks = peaksSoFar({
      ...ctx,
      completed: [
        ...ctx.completed,
        { name: "footprint", title: "", runs, targets: [], notes: [], seconds: 0 },
      ],
    });
    const echoPeak = peaks.get("echo")?.mb;

    const targets = [
      ...starts.map(([name, times]) =>
        check(
          `${name}: start to SERVING ≤ 1 s on real Postgres`,
          `median of ${times.length} starts ${Math.round(median(times))} ms (all: ${times.map(Math.round).join(", ")} ms)`,
          median(times) / 1000,
          "<=",
          1,
          "see the footprint notes",
        ),
      ),
      ...[...peaks]
        .filter(([name]) => name !== "echo")
        .map(([name, peak]) =>
          check(
            `${name}: ≤ 150 MB RSS under load`,
            `peak ${Math.round(peak.mb)} MB (${peak.where}); echo reference ${Math.round(echoPeak ?? 0)} MB`,
            peak.mb,
            "<=",
            RSS_LIMIT_MB,
            "see the footprint notes",
          ),
        ),
    ];
    const rateRun = runs[1]?.median;
    return {
      runs: [...runs, repeated("rate with --max-semi-space-size=16 (informational)", [cappedRun])],
      targets,
      notes: [
        `Start: spawn of \`node --import ./lib/src/telemetry-register.ts services/<name>/src/main.ts\` (migrations already applied) until grpc.health.v1 Check answers SERVING, polled every 5 ms (plain TCP until the port accepts, then the health check); ${STARTS} starts each.`,
        `The user service started without \`--import telemetry-register\` (tracing off either way): median ${Math.round(median(bare))} ms (all: ${bare.map(Math.round).join(", ")} ms), against ${Math.round(median(starts[0]?.[1] ?? []))} ms with it.`,
        `Informational, one run: the rate service with NODE_OPTIONS=--max-semi-space-size=${SEMI_SPACE_MB} peaked at ${Math.round(cappedRun.usage[capped.name]?.peakRssMb ?? 0)} MB serving ${Math.round(cappedRun.throughput)}/s, against ${Math.round(rateRun?.usage.rate?.peakRssMb ?? 0)} MB and ${Math.round(rateRun?.throughput ?? 0)}/s with V8's default young generation.`,
        "Peak RSS: VmHWM, reset (clear_refs) at the start of every measured window, largest over every run of this invocation (including earlier scenarios).",
      ],
    };
  },
};
