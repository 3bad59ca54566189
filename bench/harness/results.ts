// The shape of what a benchmark run produces, and the medians and ratios taken over repetitions.
import type { RunResult } from "./drive.ts";
import type { LatencySummary } from "./histogram.ts";
import type { ProcessUsage } from "./proc-stats.ts";

export type { RunResult };

/** One measured configuration, repeated; figures are medians over the repetitions. */
export interface RepeatedRun {
  label: string;
  reps: RunResult[];
  median: RunResult;
}

export interface TargetCheck {
  /** The target as the issue states it. */
  target: string;
  /** What was measured, in words and numbers. */
  measured: string;
  /** The figure compared with the threshold, e.g. 0.74 for "74% of echo". */
  value: number;
  threshold: number;
  /** Whether value must be at least or at most the threshold. */
  direction: ">=" | "<=";
  met: boolean;
  /** Why a target is not met, or what limits the figure. */
  note?: string;
}

export interface ScenarioReport {
  name: string;
  title: string;
  runs: RepeatedRun[];
  targets: TargetCheck[];
  notes: string[];
  /** Set when the scenario could not run at all. */
  error?: string;
  seconds: number;
  /** 1-minute load average at the start and the end of the scenario. */
  load?: [number, number];
}

export interface MachineFacts {
  nproc: number;
  cpuModel: string;
  memoryGb: number;
  node: string;
  tools: Record<string, string>;
  loadBefore: number[];
  loadAfter: number[];
}

export interface BenchReport {
  startedAt: string;
  finishedAt: string;
  filter: string | undefined;
  repetitions: number;
  machine: MachineFacts;
  scenarios: ScenarioReport[];
}

export function median(values: number[]): number {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/** Median of each figure separately; statuses are summed over repetitions; peak RSS is the max. */
export function medianRun(reps: RunResult[]): RunResult {
  const first = reps[0];
  if (!first) throw new Error("no repetitions");
  const latency = (pick: (r: RunResult) => LatencySummary | undefined) => {
    const all = reps.map(pick).filter((l): l is LatencySummary => l !== undefined);
    if (all.length === 0) return undefined;
    return {
      count: all.reduce((n, l) => n + l.count, 0),
      p50: median(all.map((l) => l.p50)),
      p90: median(all.map((l) => l.p90)),
      p99: median(all.map((l) => l.p99)),
      p999: median(all.map((l) => l.p999)),
      max: Math.max(...all.map((l) => l.max)),
    };
  };
  const statuses: Record<string, number> = {};
  const usage: Record<string, ProcessUsage> = {};
  let serverCodes: Record<string, number> | undefined;
  for (const r of reps) {
    for (const [k, n] of Object.entries(r.statuses)) statuses[k] = (statuses[k] ?? 0) + n;
    for (const [k, n] of Object.entries(r.serverCodes ?? {})) {
      serverCodes ??= {};
      serverCodes[k] = (serverCodes[k] ?? 0) + n;
    }
  }
  for (const name of new Set(reps.flatMap((r) => Object.keys(r.usage)))) {
    const all = reps.map((r) => r.usage[name]).filter((u): u is ProcessUsage => u !== undefined);
    usage[name] = {
      cpuSeconds: median(all.map((u) => u.cpuSeconds)),
      cpuCores: median(all.map((u) => u.cpuCores)),
      peakRssMb: Math.max(...all.map((u) => u.peakRssMb)),
    };
  }
  return {
    tool: first.tool,
    mode: first.mode,
    offeredRps: first.offeredRps,
    throughput: median(reps.map((r) => r.throughput)),
    statuses,
    latency: latency((r) => r.latency) as LatencySummary,
    sendLag: latency((r) => r.sendLag),
    usage,
    serverCodes,
  };
}

export function repeated(label: string, reps: RunResult[]): RepeatedRun {
  return { label, reps, median: medianRun(reps) };
}

/**
 * The median of per-repetition ratios: each subject run is paired with the reference run
 * next to it in time, so drift in the machine's load cancels within a pair.
 */
export function pairedRatio(subject: number[], reference: number[]): number {
  return median(subject.map((s, i) => s / (reference[i] as number)));
}

export function check(
  target: string,
  measured: string,
  value: number,
  direction: ">=" | "<=",
  threshold: number,
  note?: string,
): TargetCheck {
  const met = direction === ">=" ? value >= threshold : value <= threshold;
  return { target, measured, value, threshold, direction, met, note: met ? undefined : note };
}
