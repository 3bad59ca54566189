import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { connect, createServer } from "node:net";
import { createInterface } from "node:readline";
import { createServiceClient } from "@coinmesh/lib/grpc-client";
import {
  Health,
  HealthCheckResponse_ServingStatus,
} from "@coinmesh/proto/grpc/health/v1/health_pb";

const root = new URL("../..", import.meta.url).pathname;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Whether something accepts TCP connections on the loopback port. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/**
 * A port nobody listens on right now, below the kernel's ephemeral range (32768+ here): a port
 * the OS picked from that range could be handed out again as the source port of an outgoing
 * connection before the process under test binds it.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const server = createServer();
    const bound = await new Promise<boolean>((resolve) => {
      server.once("error", () => resolve(false));
      server.listen(port, "127.0.0.1", () => resolve(true));
    });
    if (bound) {
      server.close();
      await once(server, "close");
      return port;
    }
  }
  throw new Error("no free port between 20000 and 32000");
}

export interface Runnable {
  name: string;
  pid: number;
  port: number;
  /** Where /metrics is served (Prometheus text). */
  metricsPort: number;
  /** host:port */
  address: string;
  /** Spawn to health SERVING, in ms. */
  startMs: number;
  /** The last lines the process wrote, for error messages. */
  tail(): string;
  /** Null while it runs. */
  exitCode(): number | null;
  stop(): Promise<void>;
}

export interface RunnableOptions {
  name: string;
  /** Path from the repository root, e.g. services/user/src/main.ts. */
  entry: string;
  env?: Record<string, string>;
  port?: number;
  /** Serves grpc.health.v1 on this port (the gateway serves it on its own port, too). */
  healthPort?: number;
  timeoutMs?: number;
  /** Without `--import telemetry-register`, to tell its cost apart (default: with it). */
  withoutTelemetry?: boolean;
}

/**
 * Starts a runnable the way production does (`node --import telemetry-register <entry>`) and
 * resolves once grpc.health.v1 Check answers SERVING, polled every 10 ms.
 */
export async function startRunnable(options: RunnableOptions): Promise<Runnable> {
  const port = options.port ?? (await freePort());
  const metricsPort = await freePort();
  const spawnedAt = performance.now();
  // BENCH_CPU_PROF=<dir>: every process under test writes a V8 CPU profile there when it stops.
  const profile = process.env.BENCH_CPU_PROF
    ? ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`]
    : [];
  const child: ChildProcess = spawn(
    process.execPath,
    [
      ...profile,
      ...(options.withoutTelemetry ? [] : ["--import", "./lib/src/telemetry-register.ts"]),
      options.entry,
    ],
    {
      cwd: root,
      env: {
        ...process.env,
        LOG_FORMAT: "json",
        LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? "warn",
        PORT: String(port),
        METRICS_PORT: String(metricsPort),
        ...options.env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const lines: string[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    createInterface({ input: stream }).on("line", (line) => {
      lines.push(line);
      if (lines.length > 40) lines.shift();
    });
  }
  const exited = once(child, "exit");
  const tail = () => lines.join("\n");
  const healthPort = options.healthPort ?? port;
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  const checkAlive = () => {
    if (child.exitCode !== null) throw new Error(`${options.name} exited:\n${tail()}`);
    if (Date.now() > deadline) throw new Error(`${options.name} not SERVING in time:\n${tail()}`);
  };
  let startMs: number | undefined;
  try {
    // A grpc-js channel that meets a closed port backs off for a second or more before trying
    // again, which would round start times up: wait for the port with plain TCP first.
    while (!(await accepts(healthPort))) {
      checkAlive();
      await sleep(5);
    }
    const { client, close } = createServiceClient(Health, `127.0.0.1:${healthPort}`);
    try {
      while (startMs === undefined) {
        checkAlive();
        const res = await client.check({}, { timeoutMs: 1_000 }).catch(() => undefined);
        if (res?.status === HealthCheckResponse_ServingStatus.SERVING) {
          startMs = performance.now() - spawnedAt;
        } else {
          await sleep(5);
        }
      }
    } finally {
      close();
    }
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }
  return {
    name: options.name,
    pid: child.pid as number,
    port,
    metricsPort,
    address: `127.0.0.1:${port}`,
    startMs,
    tail,
    exitCode: () => child.exitCode ?? (child.signalCode ? -1 : null),
    async stop() {
      if (child.exitCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
