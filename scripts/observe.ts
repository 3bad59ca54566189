// `npm run observe`: a real Prometheus (Debian's `prometheus` package) scraping the platform
// that `npm start` runs on loopback, with the project's recording and alerting rules.
// Prints the URL once it is ready; Ctrl-C stops it. Data stays in .data/prometheus.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { resolve } from "node:path";
import { parseArgs } from "node:util";

const root = resolve(import.meta.dirname, "..");

export interface PrometheusOptions {
  /** host:port for the web UI and API. */
  listen: string;
  dataDir: string;
  binary: string;
  logLevel: "debug" | "info" | "warn" | "error";
  /** Defaults to monitoring/prometheus/prometheus-local.yml. */
  configFile?: string;
}

export interface RunningPrometheus {
  url: string;
  /** Settles with the exit code (null when ended by a signal). */
  exited: Promise<number | null>;
  stop(): Promise<number | null>;
}

export function prometheusArgs(options: PrometheusOptions): string[] {
  return [
    `--config.file=${options.configFile ?? resolve(root, "monitoring/prometheus/prometheus-local.yml")}`,
    `--storage.tsdb.path=${options.dataDir}`,
    "--storage.tsdb.retention.time=2d",
    `--web.listen-address=${options.listen}`,
    // Exemplars (trace ids on histogram samples) are kept only with this feature on.
    "--enable-feature=exemplar-storage",
    `--log.level=${options.logLevel}`,
  ];
}

async function waitReady(url: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(
        `prometheus exited (${child.signalCode ?? child.exitCode}) before it was ready`,
      );
    }
    try {
      const res = await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(1_000) });
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`prometheus did not become ready at ${url} within ${timeoutMs} ms`);
}

export async function startPrometheus(options: PrometheusOptions): Promise<RunningPrometheus> {
  mkdirSync(options.dataDir, { recursive: true });
  const child = spawn(options.binary, prometheusArgs(options), {
    cwd: root,
    stdio: ["ignore", "inherit", "inherit"],
  });
  const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)));
  const spawnFailed = new Promise<never>((_, fail) => child.once("error", fail));
  const url = `http://${options.listen}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    return exited;
  };
  try {
    await Promise.race([waitReady(url, child, 30_000), spawnFailed]);
  } catch (error) {
    await stop();
    throw error;
  }
  return { url, exited, stop };
}

async function main() {
  const { values } = parseArgs({
    options: {
      listen: { type: "string", default: "127.0.0.1:9090" },
      data: { type: "string", default: resolve(root, ".data/prometheus") },
      "log-level": { type: "string", default: "warn" },
    },
  });
  const logLevel = values["log-level"];
  if (logLevel !== "debug" && logLevel !== "info" && logLevel !== "warn" && logLevel !== "error") {
    throw new Error(`--log-level must be debug, info, warn or error, not ${logLevel}`);
  }
  const running = await startPrometheus({
    listen: values.listen,
    dataDir: resolve(values.data),
    binary: process.env.PROMETHEUS_BIN ?? "prometheus",
    logLevel,
  }).catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") {
      console.error("prometheus is not installed: apt-get install -y prometheus");
      process.exit(1);
    }
    throw error;
  });
  console.log(`Prometheus: ${running.url}
  targets  ${running.url}/targets   (gateway :9460, user :9461, order :9462, rate :9463)
  alerts   ${running.url}/alerts
  rules    ${running.url}/rules
Ctrl-C stops it; data stays in ${values.data}.`);
  // Ctrl-C reaches Prometheus too (same process group); either way it shuts down cleanly.
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => void running.stop());
  }
  process.exitCode = (await running.exited) ?? 0;
}

if (import.meta.main) {
  main().catch((error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  });
}
