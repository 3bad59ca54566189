import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RunResult } from "./drive.ts";
import { createLatencyHistogram, summarize } from "./histogram.ts";
import { createUsageMeter } from "./proc-stats.ts";
import type { WireRequest } from "./wire.ts";

export interface H2loadOptions {
  origin: string;
  request: WireRequest;
  clients: number;
  /** Concurrent streams per client (-m). */
  streams: number;
  warmupS: number;
  durationS: number;
  /** Requests per second per client; without it h2load runs closed-loop as fast as it can. */
  rpsPerClient?: number;
  /** Processes under test whose CPU and peak RSS are measured over the same window. */
  processes?: Record<string, number>;
}

export interface H2loadFacts {
  succeeded: number;
  failed: number;
  httpStatuses: Record<string, number>;
}

/** Parses h2load's summary lines. */
export function parseH2loadOutput(text: string): H2loadFacts {
  const requests = /requests: .*?(\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(
    text,
  );
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(text);
  if (!requests || !codes) throw new Error(`unexpected h2load output:\n${text}`);
  const n = (s: string | undefined) => Number(s ?? 0);
  return {
    succeeded: n(requests[1]),
    failed: n(requests[2]) + n(requests[3]) + n(requests[4]),
    httpStatuses: {
      "HTTP 2xx": n(codes[1]),
      "HTTP 3xx": n(codes[2]),
      "HTTP 4xx": n(codes[3]),
      "HTTP 5xx": n(codes[4]),
    },
  };
}

/**
 * Runs h2load (nghttp2's C load generator) under GNU time, so its own CPU and peak RSS are
 * known; latency comes from its per-request log (measured window only, from actual send time).
 * h2load only knows HTTP statuses: a gRPC error is still "HTTP 2xx", so callers check the
 * server's own per-code counters or a sample call.
 */
export async function runH2load(options: H2loadOptions): Promise<RunResult> {
  const dir = await mkdtemp(join(tmpdir(), "coinmesh-h2load-"));
  try {
    const bodyFile = join(dir, "body");
    const logFile = join(dir, "requests.log");
    const timeFile = join(dir, "time");
    await writeFile(bodyFile, options.request.body);
    const args = [
      "-o",
      timeFile,
      "-f",
      "%U %S %M",
      "h2load",
      "-c",
      String(options.clients),
      "-m",
      String(options.streams),
      "-D",
      String(options.durationS),
      "--warm-up-time",
      String(options.warmupS),
      `--log-file=${logFile}`,
      "-d",
      bodyFile,
      ...Object.entries(options.request.headers).flatMap(([k, v]) => ["-H", `${k}: ${v}`]),
      ...(options.rpsPerClient ? [`--rps=${options.rpsPerClient}`] : []),
      `${options.origin}${options.request.path}`,
    ];
    const child = spawn("/usr/bin/time", args, { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (c: Buffer) => {
      output += c.toString();
    });
    child.stderr.on("data", (c: Buffer) => {
      output += c.toString();
    });
    const meter = createUsageMeter(options.processes ?? {});
    let usage: ReturnType<typeof meter.stop> | undefined;
    const windowTimer = setTimeout(() => meter.start(), options.warmupS * 1000);
    const stopTimer = setTimeout(
      () => {
        usage = meter.stop();
      },
      (options.warmupS + options.durationS) * 1000,
    );
    const [code] = (await once(child, "exit")) as [number | null];
    clearTimeout(windowTimer);
    clearTimeout(stopTimer);
    usage ??= meter.stop();
    if (code !== 0) throw new Error(`h2load exited with ${code}:\n${output}`);
    const facts = parseH2loadOutput(output);

    const histogram = createLatencyHistogram();
    for (const line of (await readFile(logFile, "utf8")).split("\n")) {
      const [, status, elapsedUs] = line.split("\t");
      if (status?.startsWith("2")) histogram.recordValue(Math.max(1, Number(elapsedUs)));
    }
    const [user, sys, maxRssKb] = (await readFile(timeFile, "utf8"))
      .trim()
      .split(/\s+/)
      .slice(-3)
      .map(Number);
    const wallS = options.warmupS + options.durationS;
    const generatorCpu = (user ?? 0) + (sys ?? 0);
    return {
      tool: "h2load",
      mode: options.rpsPerClient ? "open" : "closed",
      offeredRps: options.rpsPerClient ? options.rpsPerClient * options.clients : undefined,
      throughput: facts.succeeded / options.durationS,
      statuses: { ...facts.httpStatuses, failed: facts.failed },
      latency: summarize(histogram),
      usage: {
        ...usage,
        generator: {
          cpuSeconds: generatorCpu,
          cpuCores: generatorCpu / wallS,
          peakRssMb: (maxRssKb ?? 0) / 1024,
        },
      },
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
