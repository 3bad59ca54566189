import { execFile } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { tmpdir } from "node:os";
import { promisify } from "node:util";
import type { AppError } from "@coinmesh/lib/errors";
import { createServiceClient } from "@coinmesh/lib/grpc-client";
import { type SpawnedRunnable, spawnRunnable } from "@coinmesh/lib/process-testing";
import { createTestDatabase, freePort, type TestDatabase, until } from "@coinmesh/lib/testing";
import {
  Health,
  HealthCheckResponse_ServingStatus as Status,
} from "@coinmesh/proto/grpc/health/v1/health_pb";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

// The whole user service as `node services/user/src/main.ts`, on the real Postgres.
const run = promisify(execFile);
const BUF = new URL("../../../node_modules/.bin/buf", import.meta.url).pathname;
const migrationsDir = new URL("../migrations", import.meta.url).pathname;

let db: TestDatabase;
const running: SpawnedRunnable[] = [];
const closers: (() => void)[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
});
afterEach(async () => {
  for (const close of closers.splice(0)) close();
  for (const proc of running.splice(0)) {
    if (proc.child.exitCode === null) proc.child.kill("SIGKILL");
  }
});
afterAll(async () => {
  await db?.drop();
});

function start(env: Record<string, string> = {}) {
  const proc = spawnRunnable("services/user/src/main.ts", {
    DATABASE_URL: db.url,
    PORT: "0",
    METRICS_PORT: "0",
    SHUTDOWN_GRACE_MS: "5000",
    ...env,
  });
  running.push(proc);
  return proc;
}

async function serving(proc: SpawnedRunnable): Promise<string> {
  const ready = await proc.waitForLog((l) => l.msg === "user service SERVING");
  return `127.0.0.1:${ready.port}`;
}

function clients(address: string) {
  const users = createServiceClient(UserService, address);
  const health = createServiceClient(Health, address);
  closers.push(users.close, health.close);
  return { users: users.client, health: health.client };
}

const statusName = (status: number | undefined) =>
  Object.entries(Status).find(([, value]) => value === status)?.[0];

/** What a gRPC health probe sees: the status, or the error kind when it gets no answer. */
async function probe(address: string, service = ""): Promise<string> {
  const { client, close } = createServiceClient(Health, address);
  try {
    const { status } = await client.check({ service }, { timeoutMs: 2_000 });
    return statusName(status) ?? String(status);
  } catch (err) {
    return (err as AppError).kind;
  } finally {
    close();
  }
}

/** A session of its own on the test database, for holding locks. */
async function session() {
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  closers.push(() => void client.end());
  return client;
}

/** Whether a session of the service is blocked on a lock the test holds. */
const waitingOnLock = async () =>
  (
    await db.pool.query(
      "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
  ).rowCount !== 0;

describe("grpc.health.v1", () => {
  it("is not SERVING while migrations wait, and SERVING once they are applied", async () => {
    // The key lib/src/migrations.ts derives from the folder: holding it stalls the migrations.
    const lockKey = createHash("sha256").update(migrationsDir).digest().readBigInt64BE(0);
    const holder = await session();
    await holder.query("SELECT pg_advisory_lock($1)", [lockKey]);
    const address = `127.0.0.1:${await freePort()}`;
    const proc = start({ PORT: address.split(":")[1] ?? "" });
    await until(waitingOnLock, "the service to wait for the migration lock", { timeoutMs: 10_000 });

    expect(await probe(address)).not.toBe("SERVING");
    expect(proc.logs.some((l) => l.msg === "user service SERVING")).toBe(false);

    await holder.query("SELECT pg_advisory_unlock($1)", [lockKey]);
    expect(await serving(proc)).toBe(address);
    const applied = await db.pool.query("SELECT name FROM schema_migrations");
    expect(applied.rows.map((r) => r.name)).toContain("0001_users.sql");
    expect(await probe(address)).toBe("SERVING");
    expect(await probe(address, "coinmesh.user.v1.UserService")).toBe("SERVING");
  });

  it("says NOT_SERVING as soon as shutdown starts, while a call is still in flight", async () => {
    const proc = start();
    const address = await serving(proc);
    const { users, health } = clients(address);
    const { user } = await users.createUser({
      email: `slow-${randomUUID()}@example.com`,
      displayName: "Before",
    });
    // A row lock held by the test keeps an UpdateUser in flight across the signal.
    const holder = await session();
    await holder.query("BEGIN");
    await holder.query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", [user?.id]);
    const slow = users.updateUser(
      { user: { id: user?.id, displayName: "After" }, updateMask: { paths: ["display_name"] } },
      { timeoutMs: 20_000 },
    );
    slow.catch(() => {}); // awaited below; this only keeps an early failure from going unhandled
    await until(waitingOnLock, "the UpdateUser to wait for the row lock", { timeoutMs: 10_000 });

    const watching = new AbortController();
    const watch = health
      .watch({ service: "" }, { signal: watching.signal })
      [Symbol.asyncIterator]();
    expect(statusName((await watch.next()).value?.status)).toBe("SERVING");

    proc.child.kill("SIGTERM");
    expect(statusName((await watch.next()).value?.status)).toBe("NOT_SERVING");
    // Then the watch ends, so that it does not hold the server open for the grace period.
    const ended = await watch.next().then(
      () => "still open",
      (err: { kind?: string }) => err.kind,
    );
    expect(ended).toBe("unavailable");
    // A new probe is refused or told NOT_SERVING: either way the pod leaves the endpoints.
    expect(["NOT_SERVING", "unavailable"]).toContain(await probe(address));
    watching.abort();

    await holder.query("COMMIT");
    expect((await slow).user?.displayName).toBe("After");
    expect(await proc.exited).toBe(0);
  });
});

describe("server reflection", () => {
  it("is enough for buf curl to list and call UserService with no schema", async () => {
    const address = await serving(start());
    const base = `http://${address}`;
    // Outside the repository, or buf reads the local module instead of asking the server.
    const options = { cwd: tmpdir(), timeout: 20_000 };
    const grpc = ["--protocol", "grpc", "--http2-prior-knowledge"];
    const listed = await run(BUF, ["curl", ...grpc, "--list-methods", base], options);
    const methods = listed.stdout.trim().split("\n");
    expect(methods).toContain("grpc.health.v1.Health/Check");
    expect(methods.filter((m) => m.startsWith("coinmesh.")).sort()).toEqual([
      "coinmesh.user.v1.UserService/CreateUser",
      "coinmesh.user.v1.UserService/GetUser",
      "coinmesh.user.v1.UserService/ListUsers",
      "coinmesh.user.v1.UserService/UpdateUser",
    ]);
    const email = `buf-${randomUUID()}@example.com`;
    const created = await run(
      BUF,
      [
        "curl",
        ...grpc,
        "-d",
        JSON.stringify({ email, display_name: "Buf" }),
        `${base}/coinmesh.user.v1.UserService/CreateUser`,
      ],
      options,
    );
    expect(JSON.parse(created.stdout).user).toMatchObject({ email, displayName: "Buf" });
  });
});

describe("configuration", () => {
  it("exits 1 naming every bad variable in one log line", async () => {
    const proc = start({
      PORT: "abc",
      METRICS_PORT: "70000",
      SHUTDOWN_GRACE_MS: "-5",
      DATABASE_URL: "notaurl",
    });
    expect(await proc.exited).toBe(1);
    const errors = proc.logs.filter((l) => Number(l.level) >= 50);
    expect(errors).toHaveLength(1);
    for (const name of ["PORT=", "METRICS_PORT=", "SHUTDOWN_GRACE_MS=", "DATABASE_URL"]) {
      expect(errors[0]?.msg).toContain(name);
    }
  });
});

describe("with DATABASE_URL set", () => {
  it("keeps users across a restart", async () => {
    const first = start();
    const before = clients(await serving(first)).users;
    const { user } = await before.createUser({
      email: `kept-${randomUUID()}@example.com`,
      displayName: "Kept",
    });
    first.child.kill("SIGTERM");
    expect(await first.exited).toBe(0);

    const after = clients(await serving(start())).users;
    expect((await after.getUser({ id: user?.id ?? "" })).user).toEqual(user);
  });
});

describe("an unexpected failure", () => {
  it("answers INTERNAL with a generic message and logs the cause with the RPC and request id", async () => {
    // A database of its own: the test breaks the schema under the running service.
    const broken = await createTestDatabase();
    try {
      const proc = start({ DATABASE_URL: broken.url });
      const { users } = clients(await serving(proc));
      await broken.pool.query("ALTER TABLE users RENAME TO users_gone");
      const requestId = `req-${randomUUID()}`;
      const err = await users
        .getUser({ id: randomUUID() }, { metadata: { "x-request-id": requestId } })
        .then(
          () => undefined,
          (e: AppError) => e,
        );
      expect(err?.kind).toBe("internal");
      expect(err?.message).toBe("UserService.GetUser: internal error");
      const line = await proc.waitForLog((l) => l.request_id === requestId);
      expect(line).toMatchObject({
        rpc: "coinmesh.user.v1.UserService/GetUser",
        msg: "unexpected error",
        level: 50,
      });
      expect((line.err as { message?: string }).message).toContain(
        'relation "users" does not exist',
      );
      proc.child.kill("SIGTERM");
      await proc.exited;
    } finally {
      await broken.drop();
    }
  });
});
