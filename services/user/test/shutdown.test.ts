import { randomUUID } from "node:crypto";
import { createServiceClient } from "@coinmesh/lib/grpc-client";
import { spawnRunnable } from "@coinmesh/lib/process-testing";
import { createTestDatabase, type TestDatabase } from "@coinmesh/lib/testing";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

// Ctrl-C under `npm start` reaches every child twice: the terminal's SIGINT to the whole process
// group, then the supervisor's SIGTERM. The second signal must not cut the drain short.
describe.each([
  { name: "SIGTERM", signals: ["SIGTERM"] as const },
  {
    name: "Ctrl-C under npm start (SIGINT, then SIGTERM)",
    signals: ["SIGINT", "SIGTERM"] as const,
  },
])("on $name", ({ signals }) => {
  it("during a burst of 200 calls, finishes every accepted call and exits 0", async () => {
    const graceMs = 5_000;
    const proc = spawnRunnable("services/user/src/main.ts", {
      DATABASE_URL: db.url,
      PORT: "0",
      METRICS_PORT: "0",
      SHUTDOWN_GRACE_MS: String(graceMs),
    });
    const ready = await proc.waitForLog((l) => l.msg === "user service SERVING");
    const { client, close } = createServiceClient(UserService, `127.0.0.1:${ready.port}`);
    // Warm the connection so the burst is in flight when the signal lands.
    await client.listUsers({ pageSize: 1 });

    const tag = randomUUID();
    const emails = Array.from({ length: 200 }, (_, i) => `burst-${i}-${tag}@example.com`);
    const calls = emails.map((email) =>
      client.createUser({ email, displayName: "Burst" }, { timeoutMs: 20_000 }).then(
        () => ({ email, ok: true as const, at: Date.now() }),
        (err: { kind?: string }) => ({ email, ok: false as const, kind: err.kind }),
      ),
    );
    await new Promise((resolve) => setImmediate(resolve));
    const signalledAt = Date.now();
    for (const signal of signals) proc.child.kill(signal);
    await proc.waitForLog((l) => l.msg === "shutting down");
    // Calls that arrive once shutdown has begun are refused, not half-done.
    const late = await Promise.all(
      [1, 2, 3].map((i) =>
        client.createUser({ email: `late-${i}-${tag}@example.com`, displayName: "Late" }).then(
          () => "ok",
          (err: { kind?: string }) => err.kind,
        ),
      ),
    );
    const results = await Promise.all(calls);
    const code = await proc.exited;
    const elapsed = Date.now() - signalledAt;
    close();

    expect(code).toBe(0);
    expect(elapsed).toBeLessThan(graceMs + 2_000);
    // Calls either completed or were refused before the server took them; none was cut off.
    const refused = results.filter((r) => !r.ok);
    for (const r of refused) expect(r.kind).toBe("unavailable");
    const stored = await db.pool.query<{ email: string }>(
      "SELECT email FROM users WHERE email LIKE $1",
      [`%-${tag}@example.com`],
    );
    const storedEmails = new Set(stored.rows.map((r) => r.email));
    const completed = results.filter((r) => r.ok).map((r) => r.email);
    // The burst really was in flight when the signal landed.
    expect(results.some((r) => r.ok && r.at > signalledAt)).toBe(true);
    expect(late).toEqual(["unavailable", "unavailable", "unavailable"]);
    expect(new Set(completed)).toEqual(storedEmails);
  });
});
