// The processes under test, started on demand as real processes on loopback and shared by the
// scenarios of one run: the echo reference, the rate service (on a fake upstream and the local
// Redis), user and order (each on a fresh database on the real Postgres) and the gateway.
import { createTestDatabase, type TestDatabase } from "@coinmesh/lib/testing";
import { startFakeUpstream } from "../../services/rate/test/fake-upstream.ts";
import { type Runnable, type RunnableOptions, startRunnable } from "./runnable.ts";

export type FakeUpstream = Awaited<ReturnType<typeof startFakeUpstream>>;

const root = new URL("../..", import.meta.url).pathname;
export const migrationsOf = (service: string) => `${root}services/${service}/migrations`;

export const BENCH_REDIS_URL = process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379";
/** Keys of their own, so the fake upstream's prices never reach a developer's rate cache. */
export const benchRedisKey = (name: string) => `coinmesh:bench:${name}:rates`;

export const JWT_SECRET = "coinmesh-bench-secret-only-for-local-benchmarks";

export interface Platform {
  echo(): Promise<Runnable>;
  rate(): Promise<Runnable>;
  /** The fake rates API the shared rate service reads. */
  upstream(): Promise<FakeUpstream>;
  user(): Promise<Runnable>;
  order(): Promise<Runnable>;
  /** The gateway with its rate limit off, for throughput runs. */
  gateway(): Promise<Runnable>;
  /** How to start another gateway in front of the shared services, e.g. with default limits. */
  gatewayOptions(name: string, env: Record<string, string>): Promise<RunnableOptions>;
  /** A migrated database of a service, for start-time runs and pgbench. */
  database(service: "user" | "order"): Promise<TestDatabase>;
  /** Starts an extra runnable that is stopped with the platform. */
  start(options: RunnableOptions): Promise<Runnable>;
  /** Every process started so far, by name. */
  pids(): Record<string, number>;
  /** The last lines each process wrote, to explain a failed scenario. */
  tails(): string;
  stop(): Promise<void>;
}

export function createPlatform(): Platform {
  const running = new Map<string, Runnable>();
  const cleanups: (() => Promise<void>)[] = [];
  const memo = new Map<string, Promise<unknown>>();
  const once = <T>(key: string, make: () => Promise<T>): Promise<T> => {
    let p = memo.get(key) as Promise<T> | undefined;
    if (!p) {
      p = make();
      memo.set(key, p);
    }
    return p;
  };

  async function start(options: RunnableOptions): Promise<Runnable> {
    // A second process under one name would never be stopped: the first one is forgotten.
    const previous = running.get(options.name);
    if (previous && previous.exitCode() === null) throw new Error(`${options.name} is running`);
    const runnable = await startRunnable(options);
    running.set(options.name, runnable);
    return runnable;
  }

  const database = (service: "user" | "order") =>
    once(`db:${service}`, async () => {
      const db = await createTestDatabase(migrationsOf(service));
      if (!db.real) {
        await db.drop();
        throw new Error("benchmarks need the real Postgres (PGlite serializes transactions)");
      }
      cleanups.push(() => db.drop());
      return db;
    });

  const upstream = () =>
    once("upstream", async () => {
      const fake = await startFakeUpstream();
      cleanups.push(() => fake.close());
      return fake;
    });

  async function gatewayOptions(
    name: string,
    env: Record<string, string>,
  ): Promise<RunnableOptions> {
    const [user, order, rate] = await Promise.all([
      platform.user(),
      platform.order(),
      platform.rate(),
    ]);
    return {
      name,
      entry: "gateway/src/main.ts",
      env: {
        USER_SERVICE_ADDR: user.address,
        ORDER_SERVICE_ADDR: order.address,
        RATE_SERVICE_ADDR: rate.address,
        JWT_SECRET,
        ...env,
      },
    };
  }

  const platform: Platform = {
    gatewayOptions,
    echo: () =>
      once("echo", () => start({ name: "echo", entry: "bench/reference/echo-server.ts" })),
    upstream,
    rate: () =>
      once("rate", async () =>
        start({
          name: "rate",
          entry: "services/rate/src/main.ts",
          env: {
            RATES_UPSTREAM_URL: (await upstream()).url,
            REDIS_URL: BENCH_REDIS_URL,
            RATES_REDIS_KEY: benchRedisKey("rate"),
          },
        }),
      ),
    user: () =>
      once("user", async () =>
        start({
          name: "user",
          entry: "services/user/src/main.ts",
          env: { DATABASE_URL: (await database("user")).url },
        }),
      ),
    order: () =>
      once("order", async () => {
        const [db, user, rate] = await Promise.all([
          database("order"),
          platform.user(),
          platform.rate(),
        ]);
        return start({
          name: "order",
          entry: "services/order/src/main.ts",
          env: {
            DATABASE_URL: db.url,
            USER_SERVICE_ADDR: user.address,
            RATE_SERVICE_ADDR: rate.address,
          },
        });
      }),
    gateway: () =>
      once("gateway", async () =>
        // Throughput runs measure the forwarding path: the per-subject rate limit is off.
        start(await gatewayOptions("gateway", { RATE_LIMIT_PER_SECOND: "0" })),
      ),
    database,
    start,
    pids: () => Object.fromEntries([...running].map(([name, r]) => [name, r.pid])),
    tails: () =>
      [...running]
        .map(([name, r]) => `--- ${name}\n${r.tail().split("\n").slice(-8).join("\n")}`)
        .join("\n"),
    async stop() {
      await Promise.all([...running.values()].map((r) => r.stop()));
      running.clear();
      for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
    },
  };
  return platform;
}
