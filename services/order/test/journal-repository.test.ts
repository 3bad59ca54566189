import { silentLogger } from "@coinmesh/lib/log";
import { createPool, type Pool } from "@coinmesh/lib/postgres";
import { createTestDatabase, type TestDatabase } from "@coinmesh/lib/testing";
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { Decimal } from "../src/amounts.ts";
import { type JournalEntry, move, userAccount } from "../src/journal.ts";
import { accountChanges, createJournalRepository } from "../src/journal-repository.ts";
import { createLedgerRepository } from "../src/ledger-repository.ts";
import type { JournalWrite } from "../src/write-once.ts";
import { ORDER_MIGRATIONS } from "./services.ts";

let db: TestDatabase;
let pipelining: Pool;
let ledger: ReturnType<typeof createLedgerRepository>;

beforeAll(async () => {
  db = await createTestDatabase(ORDER_MIGRATIONS);
  // main.ts pipelines on a real Postgres only.
  pipelining = createPool(db.url, silentLogger(), { max: 4, pipeline: db.real });
  ledger = createLedgerRepository(db.pool);
});
afterAll(async () => {
  await pipelining?.end();
  await db?.drop();
});

let keys = 0;
function deposit(userId: string, amount: string, key = `key-${++keys}`): JournalWrite {
  const entry: JournalEntry = {
    id: uuidv7(),
    kind: "deposit",
    userId,
    orderId: undefined,
    createTime: new Date(),
    postings: move("external", userAccount(userId), "USD", new Decimal(amount)),
  };
  return {
    userId,
    key,
    rpc: "Deposit",
    request: new TextEncoder().encode(amount),
    response: new TextEncoder().encode(`response ${entry.id}`),
    entry,
    order: undefined,
  };
}

function withdrawal(userId: string, amount: string): JournalWrite {
  const w = deposit(userId, amount);
  w.rpc = "Withdraw";
  w.entry.kind = "withdrawal";
  w.entry.postings = move(userAccount(userId), "external", "USD", new Decimal(amount));
  return w;
}

async function count(table: string, userId: string): Promise<number> {
  const { rows } = await db.pool.query<{ n: string }>(
    `SELECT count(*) AS n FROM ${table} WHERE user_id = $1`,
    [userId],
  );
  return Number(rows[0]?.n);
}

/** Holds a key in an open transaction, as a first attempt still running does. */
async function holdKey(w: JournalWrite) {
  const client = await db.pool.connect();
  await client.query("BEGIN");
  await client.query(
    "INSERT INTO idempotency_keys (user_id, key, rpc, request, response, create_time) VALUES ($1, $2, $3, $4, $5, now())",
    [w.userId, w.key, w.rpc, w.request, Buffer.from("first attempt")],
  );
  return {
    async end(how: "COMMIT" | "ROLLBACK") {
      await client.query(how);
      client.release();
    },
  };
}

/** Whether a promise is still pending after a moment. */
async function pending(promise: Promise<unknown>): Promise<boolean> {
  const marker = Symbol();
  const raced = await Promise.race([promise, new Promise((r) => setTimeout(() => r(marker), 150))]);
  return raced === marker;
}

test("accountChanges orders user accounts by (user, currency) and skips house and external", () => {
  const postings = [
    { account: "user:b", currency: "USD", amount: "-1" },
    { account: "house", currency: "USD", amount: "1" },
    { account: "user:a", currency: "USD", amount: "1" },
    { account: "user:a", currency: "BTC", amount: "-1" },
    { account: "external", currency: "USD", amount: "-1" },
  ];
  expect(accountChanges(postings).map((c) => `${c.userId}/${c.currency}/${c.delta}`)).toEqual([
    "a/BTC/-1",
    "a/USD/1",
    "b/USD/-1",
  ]);
});

// main.ts pipelines; the sequential path serves pools that do not.
describe.each([
  ["a pipelining pool", () => pipelining],
  ["a plain pool", () => db.pool],
])("on %s", (_, poolOf) => {
  let journal: ReturnType<typeof createJournalRepository>;
  beforeAll(() => {
    journal = createJournalRepository(poolOf(), { preparedStatements: db.real });
  });

  describe("write", () => {
    test("stores the entry, its key and the balances", async () => {
      const userId = uuidv7();
      const w = deposit(userId, "10.5");
      expect(await journal.write(w)).toEqual({ status: "written" });
      expect(await ledger.balances(userId)).toEqual([{ currency: "USD", amount: "10.5" }]);
      const [entry] = await ledger.history(userId, undefined, 10);
      expect(entry).toEqual({ ...w.entry, createTime: entry?.createTime });
      expect(entry?.createTime.getTime()).toBe(w.entry.createTime.getTime());
    });

    test("a taken key writes nothing and returns what is stored", async () => {
      const userId = uuidv7();
      const first = deposit(userId, "1", "same");
      await journal.write(first);
      const second = deposit(userId, "2", "same");
      const outcome = await journal.write(second);
      expect(outcome).toEqual({
        status: "duplicate",
        stored: {
          rpc: "Deposit",
          request: Buffer.from(first.request),
          response: Buffer.from(first.response),
        },
      });
      expect(await ledger.balances(userId)).toEqual([{ currency: "USD", amount: "1" }]);
      expect(await count("transactions", userId)).toBe(1);
    });

    test("a short debit writes nothing and reports exact figures", async () => {
      const userId = uuidv7();
      await journal.write(deposit(userId, "3.25"));
      expect(await journal.write(withdrawal(userId, "3.250000000000000001"))).toEqual({
        status: "insufficient",
        userId,
        currency: "USD",
        available: "3.250000000000000000",
        required: "3.250000000000000001",
      });
      expect(await count("transactions", userId)).toBe(1);
      expect(await count("idempotency_keys", userId)).toBe(1);
      expect(await journal.write(withdrawal(userId, "3.25"))).toEqual({ status: "written" });
      expect(await ledger.balances(userId)).toEqual([{ currency: "USD", amount: "0" }]);
    });

    test("a debit of an account never credited finds nothing available and creates no account", async () => {
      const userId = uuidv7();
      expect(await journal.write(withdrawal(userId, "1"))).toMatchObject({
        status: "insufficient",
        available: "0",
      });
      expect(await ledger.balances(userId)).toEqual([]);
    });
  });

  describe("while a first attempt is still running", () => {
    test("a retry waits for it, then gets its result", async (ctx) => {
      if (!db.real) ctx.skip("needs the real Postgres: the embedded one serializes connections");
      const userId = uuidv7();
      const w = deposit(userId, "5");
      const first = await holdKey(w);
      const retry = journal.write(w);
      expect(await pending(retry)).toBe(true);
      await first.end("COMMIT");
      expect(await retry).toMatchObject({
        status: "duplicate",
        stored: { response: Buffer.from("first attempt") },
      });
      expect(await count("transactions", userId)).toBe(0);
    });

    test("a retry executes itself if the first attempt rolls back", async (ctx) => {
      if (!db.real) ctx.skip("needs the real Postgres: the embedded one serializes connections");
      const userId = uuidv7();
      const w = deposit(userId, "5");
      const first = await holdKey(w);
      const retry = journal.write(w);
      expect(await pending(retry)).toBe(true);
      await first.end("ROLLBACK");
      expect(await retry).toEqual({ status: "written" });
      expect(await ledger.balances(userId)).toEqual([{ currency: "USD", amount: "5" }]);
    });

    test("findResult waits for it too, and leaves no key behind when there is none", async (ctx) => {
      if (!db.real) ctx.skip("needs the real Postgres: the embedded one serializes connections");
      const userId = uuidv7();
      const w = deposit(userId, "5");
      const first = await holdKey(w);
      const lookup = journal.findResult(userId, w.key);
      expect(await pending(lookup)).toBe(true);
      await first.end("COMMIT");
      expect((await lookup)?.response).toEqual(Buffer.from("first attempt"));

      expect(await journal.findResult(userId, "never-used")).toBeUndefined();
      expect(await count("idempotency_keys", userId)).toBe(1);
    });
  });

  test("deleteKeysBefore deletes only keys older than the cut-off", async () => {
    const userId = uuidv7();
    await journal.write(deposit(userId, "1", "old-1"));
    await journal.write(deposit(userId, "1", "old-2"));
    await journal.write(deposit(userId, "1", "new"));
    await db.pool.query(
      "UPDATE idempotency_keys SET create_time = now() - interval '49 hours' WHERE user_id = $1 AND key LIKE 'old-%'",
      [userId],
    );
    const cutoff = new Date(Date.now() - 48 * 3_600_000);
    expect(await journal.deleteKeysBefore(cutoff, 1)).toBeGreaterThanOrEqual(2);
    const { rows } = await db.pool.query("SELECT key FROM idempotency_keys WHERE user_id = $1", [
      userId,
    ]);
    expect(rows).toEqual([{ key: "new" }]);
  });
});

test("200 concurrent opposite transfers between two users all succeed: accounts lock in one order", async (ctx) => {
  if (!db.real) ctx.skip("needs the real Postgres: the embedded one serializes connections");
  // Enough connections that many transfers in both directions hold locks at once.
  const pool = createPool(db.url, silentLogger(), { max: 32, pipeline: true });
  try {
    const journal = createJournalRepository(pool, { preparedStatements: true });
    const [a, b] = [uuidv7(), uuidv7()];
    await journal.write(deposit(a, "1000"));
    await journal.write(deposit(b, "1000"));
    const transfer = (from: string, to: string, amount: string): JournalWrite => {
      const w = deposit(from, amount);
      w.rpc = "Transfer";
      w.entry.kind = "transfer";
      w.entry.postings = move(userAccount(from), userAccount(to), "USD", new Decimal(amount));
      return w;
    };
    const writes = Array.from({ length: 200 }, (_, i) =>
      i % 2 === 0 ? transfer(a, b, "1.5") : transfer(b, a, "1"),
    );
    const outcomes = await Promise.allSettled(writes.map((w) => journal.write(w)));
    // A deadlock would fail a write with SQLSTATE 40P01.
    const failures = outcomes.flatMap((o) =>
      o.status === "rejected" ? [`${(o.reason as { code?: string }).code}: ${o.reason}`] : [],
    );
    expect(failures).toEqual([]);
    expect(outcomes.map((o) => o.status === "fulfilled" && o.value.status)).toEqual(
      Array(200).fill("written"),
    );
    // 100 × 1.5 from a to b, 100 × 1 back: the 2000 both hold is conserved.
    expect(await ledger.balances(a)).toEqual([{ currency: "USD", amount: "950" }]);
    expect(await ledger.balances(b)).toEqual([{ currency: "USD", amount: "1050" }]);
    expect(await count("transactions", a)).toBe(101);
    expect(await count("transactions", b)).toBe(101);
  } finally {
    await pool.end();
  }
});
