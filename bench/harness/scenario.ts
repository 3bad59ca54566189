import { driveLoad } from "./drive.ts";
import { runH2load } from "./h2load.ts";
import type { Platform } from "./platform.ts";
import type { Progress } from "./progress.ts";
import type { RunResult, ScenarioReport } from "./results.ts";
import type { Runnable } from "./runnable.ts";
import { codesBetween, handledByCode } from "./server-codes.ts";
import type { WireRequest } from "./wire.ts";

export interface BenchSettings {
  /** Repetitions of every measured configuration (figures are their medians). */
  repetitions: number;
  warmupS: number;
  durationS: number;
  /** h2load clients × streams per client for closed-loop (maximum throughput) runs. */
  clients: number;
  streams: number;
  /** Open-loop runs never ask the Node generator for more than this (it shares the CPUs). */
  openLoopMaxRps: number;
  /** Node generator processes for open-loop runs. */
  generatorWorkers: number;
}

export const FULL_SETTINGS: BenchSettings = {
  repetitions: 3,
  warmupS: 1,
  durationS: 4,
  clients: 4,
  // A proxy answers later than the echo, so it needs more calls in flight to be kept busy
  // (Little's law): with 16 streams per connection the gateway idled a fifth of the time.
  streams: 32,
  // The Node generator spends about as much CPU per call as a grpc-js server: above this it
  // would take one of the machine's two cores from the processes it measures.
  openLoopMaxRps: 1_500,
  generatorWorkers: 2,
};

export interface BenchContext extends BenchSettings {
  platform: Platform;
  progress: Progress;
  /** Reports of the scenarios that already ran in this invocation. */
  completed: ScenarioReport[];
}

export type ScenarioOutcome = Pick<ScenarioReport, "runs" | "targets" | "notes">;

export interface Scenario {
  /** Short kebab-case name; `npm run bench -- <filter>` runs scenarios whose name contains it. */
  name: string;
  title: string;
  /** Rough wall time with FULL_SETTINGS, for the progress display. */
  expectedS: number;
  run(ctx: BenchContext): Promise<ScenarioOutcome>;
}

/** Processes to meter during a run: the ones under test, by name. */
export const meter = (...runnables: Runnable[]) =>
  Object.fromEntries(runnables.map((r) => [r.name, r.pid]));

/** Maximum throughput: h2load with the context's clients × streams. */
export async function closedLoop(
  ctx: BenchContext,
  label: string,
  origin: string,
  request: WireRequest,
  processes: Record<string, number>,
): Promise<RunResult> {
  const done = ctx.progress.step(`${label}: closed loop`, (ctx.warmupS + ctx.durationS) * 1000);
  try {
    return await runH2load({
      origin,
      request,
      clients: ctx.clients,
      streams: ctx.streams,
      warmupS: ctx.warmupS,
      durationS: ctx.durationS,
      processes,
    });
  } finally {
    done();
  }
}

/** A fixed arrival rate from the Node generator, latency from the scheduled send time. */
export async function openLoop(
  ctx: BenchContext,
  label: string,
  origin: string,
  requests: WireRequest[],
  rate: number,
  processes: Record<string, number>,
  extra: { uniqueToken?: string; durationS?: number; timeoutMs?: number } = {},
): Promise<RunResult> {
  const durationS = extra.durationS ?? ctx.durationS;
  const done = ctx.progress.step(
    `${label}: open loop @ ${Math.round(rate)}/s`,
    (ctx.warmupS + durationS) * 1000,
  );
  try {
    return await driveLoad({
      mode: "open",
      origin,
      requests,
      rate,
      uniqueToken: extra.uniqueToken,
      workers: ctx.generatorWorkers,
      warmupMs: ctx.warmupS * 1000,
      durationMs: durationS * 1000,
      timeoutMs: extra.timeoutMs,
      processes,
    });
  } finally {
    done();
  }
}

/** Runs fn and attaches the server's own per-code counts of method calls made meanwhile. */
export async function withServerCodes(
  server: Runnable,
  method: string,
  fn: () => Promise<RunResult>,
): Promise<RunResult> {
  const read = () =>
    handledByCode(server.metricsPort, method).catch((err: unknown) => {
      const exit = server.exitCode();
      throw new Error(
        `${server.name} metrics unreadable${exit === null ? "" : ` (process exited: ${exit})`}: ${(err as Error).message}\n${server.tail()}`,
      );
    });
  const before = await read();
  const result = await fn();
  const after = await read();
  return { ...result, serverCodes: codesBetween(before, after) };
}

export const origin = (r: Runnable) => `http://${r.address}`;
