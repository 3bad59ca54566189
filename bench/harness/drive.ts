import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import type { DrivePlan, DriveWorkerResult } from "./drive-worker.ts";
import { type LatencySummary, mergeHistograms, summarize } from "./histogram.ts";
import { createUsageMeter, type ProcessUsage } from "./proc-stats.ts";
import type { WireRequest } from "./wire.ts";

const workerEntry = new URL("./drive-worker.ts", import.meta.url).pathname;

export interface DriveOptions {
  mode: "open" | "closed";
  origin: string;
  /** One request, or several used round-robin (same protocol and path; headers may differ). */
  requests: WireRequest[];
  uniqueToken?: string;
  /** Open loop: total requests per second across workers. */
  rate?: number;
  /** Closed loop: total requests in flight across workers. */
  concurrency?: number;
  workers?: number;
  connectionsPerWorker?: number;
  warmupMs: number;
  durationMs: number;
  timeoutMs?: number;
  /** Answers later than this after their scheduled time count as LATE, whatever their status. */
  deadlineMs?: number;
  /** Processes under test whose CPU and peak RSS are measured over the same window. */
  processes?: Record<string, number>;
}

export interface RunResult {
  tool: "node-http2" | "h2load" | "pgbench" | "redis-benchmark";
  mode: "open" | "closed";
  /** Open loop: the arrival rate asked for. */
  offeredRps?: number;
  /** Requests answered OK per second of the measured window. */
  throughput: number;
  statuses: Record<string, number>;
  latency: LatencySummary;
  /** Node generator only: latency per status, e.g. how fast rejections came back. */
  latencyByStatus?: Record<string, LatencySummary>;
  /** Open loop only: how late the generator sent against its schedule. */
  sendLag?: LatencySummary;
  /** CPU and peak RSS per process, the generator's own included ("generator"). */
  usage: Record<string, ProcessUsage>;
  /** Calls the server itself finished per status code (its metrics), warm-up included. */
  serverCodes?: Record<string, number>;
}

async function startWorker(): Promise<ChildProcess> {
  const child = spawn(process.execPath, [workerEntry], {
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const [message] = (await once(child, "message")) as [unknown];
  if (message !== "ready") throw new Error(`load worker said ${String(message)}`);
  return child;
}

/** Runs an open- or closed-loop load from several worker processes and merges what they saw. */
export async function driveLoad(options: DriveOptions): Promise<RunResult> {
  const workerCount = options.workers ?? 2;
  const workers = await Promise.all(Array.from({ length: workerCount }, startWorker));
  const first = options.requests[0];
  if (!first) throw new Error("driveLoad needs at least one request");
  const startAtEpochMs = Date.now() + 50;
  const share = (total: number | undefined, i: number) =>
    total === undefined
      ? undefined
      : Math.floor(total / workerCount) + (i < total % workerCount ? 1 : 0);
  const results = workers.map((worker, i) => {
    const plan: DrivePlan = {
      mode: options.mode,
      origin: options.origin,
      protocol: first.protocol,
      path: first.path,
      variants: options.requests.map((r) => ({
        headers: r.headers,
        body: r.body.toString("base64"),
      })),
      uniqueToken: options.uniqueToken,
      rate: options.rate === undefined ? undefined : options.rate / workerCount,
      concurrency: share(options.concurrency, i),
      connections: options.connectionsPerWorker ?? 2,
      warmupMs: options.warmupMs,
      durationMs: options.durationMs,
      timeoutMs: options.timeoutMs ?? 10_000,
      deadlineMs: options.deadlineMs,
      startAtEpochMs,
      workerId: i,
      phaseMs: options.rate ? (1000 / options.rate) * i : 0,
    };
    const result = once(worker, "message") as Promise<[DriveWorkerResult]>;
    worker.send(plan);
    return result.then(([r]) => r);
  });

  const pids: Record<string, number> = { ...options.processes };
  workers.forEach((w, i) => {
    if (w.pid) pids[`generator#${i}`] = w.pid;
  });
  const meter = createUsageMeter(pids);
  const untilWindow = startAtEpochMs + options.warmupMs - Date.now();
  await new Promise((resolve) => setTimeout(resolve, untilWindow));
  meter.start();
  await new Promise((resolve) => setTimeout(resolve, options.durationMs));
  const usage = meter.stop();
  const done = await Promise.all(results);
  await Promise.all(workers.map((w) => (w.exitCode === null ? once(w, "exit") : undefined)));

  const statuses: Record<string, number> = {};
  for (const r of done)
    for (const [status, n] of Object.entries(r.statuses))
      statuses[status] = (statuses[status] ?? 0) + n;
  return {
    tool: "node-http2",
    mode: options.mode,
    offeredRps: options.rate,
    throughput: (statuses.OK ?? 0) / (options.durationMs / 1000),
    statuses,
    latency: summarize(mergeHistograms(done.map((r) => r.latency))),
    latencyByStatus: Object.fromEntries(
      Object.keys(statuses).map((status) => [
        status,
        summarize(mergeHistograms(done.flatMap((r) => r.latencyByStatus[status] ?? []))),
      ]),
    ),
    sendLag:
      options.mode === "open" ? summarize(mergeHistograms(done.map((r) => r.sendLag))) : undefined,
    usage: combineGenerators(usage),
  };
}

/** Sums the worker processes into one "generator" entry (peak RSS: the largest worker). */
export function combineGenerators(
  usage: Record<string, ProcessUsage>,
): Record<string, ProcessUsage> {
  const out: Record<string, ProcessUsage> = {};
  let generator: ProcessUsage | undefined;
  for (const [name, u] of Object.entries(usage)) {
    if (!name.startsWith("generator#")) {
      out[name] = u;
      continue;
    }
    generator = generator
      ? {
          cpuSeconds: generator.cpuSeconds + u.cpuSeconds,
          cpuCores: generator.cpuCores + u.cpuCores,
          peakRssMb: Math.max(generator.peakRssMb, u.peakRssMb),
        }
      : u;
  }
  if (generator) out.generator = generator;
  return out;
}
