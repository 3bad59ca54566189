import { randomUUID } from "node:crypto";
import { type SpawnedRunnable, spawnRunnable } from "@coinmesh/lib/process-testing";
import { createTestDatabase, inCI, TEST_REDIS_URL, type TestDatabase } from "@coinmesh/lib/testing";
import { type FakeUpstream, startFakeUpstream } from "../../services/rate/test/fake-upstream.ts";

export type ProcessName = "user" | "order" | "rate" | "gateway";

export interface PlatformOptions {
  /** Also start the gateway in front of the services. */
  gateway?: boolean;
  /** Environment for every process (e.g. OTEL_EXPORTER_OTLP_ENDPOINT). */
  env?: Record<string, string>;
  /** Environment for one process on top of `env` (e.g. a canary's SERVICE_VERSION). */
  envOf?: Partial<Record<ProcessName, Record<string, string>>>;
}

export interface Platform {
  user: string;
  order: string;
  rate: string;
  /** http://127.0.0.1:<port> of the gateway, when started. */
  gateway: string | undefined;
  metricsPorts: Record<string, number>;
  upstream: FakeUpstream;
  processes: Record<string, SpawnedRunnable>;
  stop(): Promise<void>;
}

export const TEST_JWT_SECRET = "coinmesh-test-secret-0123456789abcdef0123456789";

/**
 * Every runnable as a real process on loopback ports picked by the OS, on fresh databases of
 * the real Postgres, the real Redis (when reachable; required in CI) and a fake rates upstream.
 */
export async function startPlatform(options: PlatformOptions = {}): Promise<Platform> {
  const upstream = await startFakeUpstream();
  const databases: TestDatabase[] = [];
  const processes: Record<string, SpawnedRunnable> = {};
  const metricsPorts: Record<string, number> = {};
  const stop = async () => {
    await Promise.all(
      Object.values(processes).map(async (p) => {
        p.child.kill("SIGTERM");
        await p.exited;
      }),
    );
    await upstream.close();
    await Promise.all(databases.map((db) => db.drop()));
  };
  try {
    const [userDb, orderDb] = await Promise.all([createTestDatabase(), createTestDatabase()]);
    databases.push(userDb, orderDb);
    if (!userDb.real && inCI) throw new Error("CI needs the real Postgres");
    const common = { PORT: "0", METRICS_PORT: "0", SHUTDOWN_GRACE_MS: "2000", ...options.env };
    const start = async (name: ProcessName, entry: string, env: Record<string, string>) => {
      const proc = spawnRunnable(entry, { ...common, ...env, ...options.envOf?.[name] });
      processes[name] = proc;
      const ready = await proc.waitForLog(
        (l) => typeof l.msg === "string" && l.msg.endsWith("SERVING"),
      );
      metricsPorts[name] = Number(ready.metricsPort);
      return `127.0.0.1:${ready.port}`;
    };
    const [user, rate] = await Promise.all([
      start("user", "services/user/src/main.ts", { DATABASE_URL: userDb.url }),
      start("rate", "services/rate/src/main.ts", {
        RATES_UPSTREAM_URL: upstream.url,
        REDIS_URL: TEST_REDIS_URL,
        RATES_REDIS_KEY: `coinmesh:test:${randomUUID()}`,
        RATES_ALLOW_SNAPSHOT: "false",
      }),
    ]);
    const order = await start("order", "services/order/src/main.ts", {
      DATABASE_URL: orderDb.url,
      USER_SERVICE_ADDR: user,
      RATE_SERVICE_ADDR: rate,
    });
    let gateway: string | undefined;
    if (options.gateway) {
      gateway = `http://${await start("gateway", "gateway/src/main.ts", {
        USER_SERVICE_ADDR: user,
        ORDER_SERVICE_ADDR: order,
        RATE_SERVICE_ADDR: rate,
        REDIS_URL: TEST_REDIS_URL,
        JWT_SECRET: TEST_JWT_SECRET,
      })}`;
    }
    return { user, order, rate, gateway, metricsPorts, upstream, processes, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
