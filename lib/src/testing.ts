import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { createServer } from "node:net";
import type { DescService } from "@bufbuild/protobuf";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Redis } from "ioredis";
import pg from "pg";
import { startEmbeddedPostgres } from "./embedded-postgres.ts";
import { createServiceClient, type ServiceClient } from "./grpc-client.ts";
import {
  type RunningGrpcServer,
  type ServiceRegistration,
  startGrpcServer,
} from "./grpc-server.ts";
import { silentLogger } from "./log.ts";
import { migrate } from "./migrations.ts";
import { createPool, type Pool } from "./postgres.ts";

/** In CI the real Postgres and Redis must be there: suites fail instead of falling back. */
export const inCI = Boolean(process.env.CI);

const ADMIN_URL = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
export const TEST_REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

async function reachablePostgres(): Promise<boolean> {
  const client = new pg.Client({ connectionString: ADMIN_URL, connectionTimeoutMillis: 2_000 });
  try {
    await client.connect();
    await client.query("SELECT 1");
    return true;
  } catch (err) {
    if (inCI)
      throw new Error(`CI is set but Postgres at ${ADMIN_URL} is unreachable`, { cause: err });
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

export interface TestDatabase {
  url: string;
  pool: Pool;
  /** False on the embedded fallback, which serializes transactions: skip concurrency tests there. */
  real: boolean;
  drop(): Promise<void>;
}

/**
 * A fresh, migrated database for one suite: a new database on the real Postgres, or (outside CI,
 * when no Postgres is reachable) an in-memory embedded one.
 */
export async function createTestDatabase(migrationsDir?: string): Promise<TestDatabase> {
  let url: string;
  let cleanup: () => Promise<void>;
  const real = await reachablePostgres();
  if (real) {
    const name = `coinmesh_test_${randomBytes(6).toString("hex")}`;
    const admin = new pg.Client({ connectionString: ADMIN_URL });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${name}`);
    await admin.end();
    const target = new URL(ADMIN_URL);
    target.pathname = `/${name}`;
    url = target.toString();
    cleanup = async () => {
      const client = new pg.Client({ connectionString: ADMIN_URL });
      await client.connect();
      await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await client.end();
    };
  } else {
    const embedded = await startEmbeddedPostgres();
    url = embedded.url;
    cleanup = embedded.stop;
  }
  const log = silentLogger();
  const pool = createPool(url, log, { max: real ? 40 : 4 });
  if (migrationsDir) await migrate(pool, migrationsDir, log);
  return {
    url,
    pool,
    real,
    async drop() {
      await pool.end();
      await cleanup();
    },
  };
}

/** A Redis client for tests, or undefined outside CI when none is reachable. */
export async function connectTestRedis(): Promise<Redis | undefined> {
  const redis = new Redis(TEST_REDIS_URL, {
    lazyConnect: true,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    connectTimeout: 2_000,
    retryStrategy: () => null,
  });
  try {
    await redis.connect();
    await redis.ping();
    return redis;
  } catch (err) {
    redis.disconnect();
    if (inCI)
      throw new Error(`CI is set but Redis at ${TEST_REDIS_URL} is unreachable`, { cause: err });
    return undefined;
  }
}

export interface TestServer extends RunningGrpcServer {
  address: string;
  /** A grpc-js client of one of the served services. */
  grpcClient<S extends DescService>(service: S): ServiceClient<S>;
  /** A connect-es client over the gRPC protocol. */
  connectClient<S extends DescService>(service: S): Client<S>;
  stop(): Promise<void>;
}

/**
 * Serves the given services on 127.0.0.1 (port 0 unless a test restarts a server on its old
 * port) and hands out clients that are closed on stop.
 */
export async function startTestServer(
  services: ServiceRegistration[],
  port = 0,
): Promise<TestServer> {
  const server = await startGrpcServer({
    host: "127.0.0.1",
    port,
    services,
    log: silentLogger(),
  });
  server.setServing();
  const address = `127.0.0.1:${server.port}`;
  const closers: (() => void)[] = [];
  const transport = createGrpcTransport({ baseUrl: `http://${address}` });
  return {
    ...server,
    address,
    grpcClient(service) {
      const { client, close } = createServiceClient(service, address);
      closers.push(close);
      return client;
    },
    connectClient: (service) => createClient(service, transport),
    async stop() {
      for (const close of closers) close();
      await server.shutdown(200);
    },
  };
}

/** A loopback port that was free a moment ago, for a process that must be told its port. */
export async function freePort(): Promise<number> {
  const server = createServer().listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, "close");
  return port;
}

/** Polls `check` until it holds; past timeoutMs fails naming what it waited for. */
export async function until(
  check: () => boolean | Promise<boolean>,
  what: string,
  { timeoutMs = 5_000, intervalMs = 20 } = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
