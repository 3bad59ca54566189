import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { RunResult } from "./drive.ts";
import { createLatencyHistogram, summarize } from "./histogram.ts";
import { createUsageMeter } from "./proc-stats.ts";

interface Timed {
  output: string;
  cpuSeconds: number;
  peakRssMb: number;
}

/** Runs a command under GNU time: its own CPU and peak RSS come back with its output. */
export async function timedCommand(command: string, args: string[], cwd?: string): Promise<Timed> {
  const dir = await mkdtemp(join(tmpdir(), "coinmesh-time-"));
  try {
    const timeFile = join(dir, "time");
    const child = spawn("/usr/bin/time", ["-o", timeFile, "-f", "%U %S %M", command, ...args], {
      cwd,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (c: Buffer) => {
      output += c.toString();
    });
    child.stderr.on("data", (c: Buffer) => {
      output += c.toString();
    });
    const [code] = (await once(child, "exit")) as [number | null];
    if (code !== 0) throw new Error(`${command} exited with ${code}:\n${output}`);
    const [user, sys, rssKb] = (await readFile(timeFile, "utf8"))
      .trim()
      .split(/\s+/)
      .slice(-3)
      .map(Number);
    return { output, cpuSeconds: (user ?? 0) + (sys ?? 0), peakRssMb: (rssKb ?? 0) / 1024 };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Runs a psql script against a database, stopping at the first error. */
export async function psqlFile(url: string, file: string): Promise<void> {
  await timedCommand("psql", ["-q", "-v", "ON_ERROR_STOP=1", "-f", file, url]);
}

export interface PgbenchOptions {
  url: string;
  script: string;
  clients: number;
  threads: number;
  warmupS: number;
  durationS: number;
  /** Processes whose CPU and peak RSS are measured over the measured run. */
  processes?: Record<string, number>;
}

/**
 * pgbench with prepared statements (as node-postgres's named queries are not, but the service's
 * SQL is parsed once per connection either way); an unlogged warm-up run first, then a measured
 * one whose per-transaction log gives the latency percentiles.
 */
export async function runPgbench(options: PgbenchOptions): Promise<RunResult> {
  const common = [
    "-n",
    "-M",
    "prepared",
    "-f",
    resolve(options.script),
    "-c",
    String(options.clients),
    "-j",
    String(options.threads),
  ];
  if (options.warmupS > 0) {
    await timedCommand("pgbench", [...common, "-T", String(options.warmupS), options.url]);
  }
  const dir = await mkdtemp(join(tmpdir(), "coinmesh-pgbench-"));
  try {
    const meter = createUsageMeter(options.processes ?? {});
    meter.start();
    const run = await timedCommand(
      "pgbench",
      [...common, "-T", String(options.durationS), "-l", "--log-prefix=tx", options.url],
      dir,
    );
    const usage = meter.stop();
    const tps = Number(/tps = ([\d.]+) \(without initial connection time\)/.exec(run.output)?.[1]);
    const failed = Number(/number of failed transactions: (\d+)/.exec(run.output)?.[1] ?? 0);
    if (!Number.isFinite(tps)) throw new Error(`unexpected pgbench output:\n${run.output}`);
    const histogram = createLatencyHistogram();
    let transactions = 0;
    for (const file of await readdir(dir)) {
      // Each line: client_id transaction_no latency_us script_no epoch_s epoch_us
      for (const line of (await readFile(join(dir, file), "utf8")).split("\n")) {
        const latencyUs = Number(line.split(" ")[2]);
        if (!Number.isFinite(latencyUs) || line === "") continue;
        histogram.recordValue(Math.max(1, latencyUs));
        transactions++;
      }
    }
    return {
      tool: "pgbench",
      mode: "closed",
      throughput: tps,
      statuses: { committed: transactions, failed },
      latency: summarize(histogram),
      usage: {
        ...usage,
        generator: {
          cpuSeconds: run.cpuSeconds,
          cpuCores: run.cpuSeconds / options.durationS,
          peakRssMb: run.peakRssMb,
        },
      },
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
