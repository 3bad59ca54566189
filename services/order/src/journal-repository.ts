import { type Pool, type PoolClient, withClient } from "@coinmesh/lib/postgres";
import type { QueryConfig, QueryResult } from "pg";
import { Decimal } from "./amounts.ts";
import { type Posting, userOfAccount } from "./journal.ts";
import { rateSourceName } from "./orders-repository.ts";
import type { JournalStore, JournalWrite, StoredResult, WriteOutcome } from "./write-once.ts";

/*
 * Every write of the service, PlaceOrder's included, is one transaction of these statements
 * (bench/sql/place-order.sql runs the same ones for pgbench):
 *
 *   BEGIN
 *   INSERT_ENTRY     the idempotency key first, then transaction, postings and order, all
 *                    conditional on the key being new
 *   CREDIT or DEBIT  once per user account, in (user_id, currency) order; a debit changes
 *                    nothing unless the balance covers it
 *   COMMIT           if the key was new and every debit was made; ROLLBACK otherwise
 *
 * On a pipelining pool (main.ts opens one on a real Postgres) everything up to COMMIT goes out in
 * one write, so the transaction costs two round trips. The account statements are sent before
 * INSERT_ENTRY's answer is known: for a retry whose key was taken they run too, and are rolled
 * back.
 *
 * A retry of a running request blocks on the key's unique index inside INSERT_ENTRY until the
 * first attempt ends; accounts are always locked in the same order, so two transfers between the
 * same accounts cannot deadlock.
 */
const INSERT_ENTRY = `
WITH k AS (
  INSERT INTO idempotency_keys (user_id, key, rpc, request, response, create_time)
  VALUES ($1, $2, $3, $4, $5, $6)
  ON CONFLICT (user_id, key) DO NOTHING
  RETURNING 1
), t AS (
  INSERT INTO transactions (id, kind, user_id, order_id, create_time)
  SELECT $7, $8, $1, $9, $6 FROM k
  RETURNING id, order_id
), p AS (
  INSERT INTO postings (transaction_id, seq, account, currency, amount)
  SELECT t.id, x.seq, x.account, x.currency, x.amount
  FROM t, unnest($10::text[], $11::text[], $12::numeric[]) WITH ORDINALITY AS x (account, currency, amount, seq)
), o AS (
  INSERT INTO orders (id, user_id, side, asset, quote_currency, quantity, limit_price, price,
                      notional, rate_source, rate_as_of, transaction_id, create_time)
  SELECT t.order_id, $1, $13, $14, $15, $16, $17, $18, $19, $20, $21, t.id, $6 FROM t
  WHERE t.order_id IS NOT NULL
)
SELECT 1 FROM t`;

// A first credit creates the account; a debit never does (no account means nothing to take).
const CREDIT = `
INSERT INTO accounts AS a (user_id, currency, balance) VALUES ($1, $2, $3)
ON CONFLICT (user_id, currency) DO UPDATE SET balance = a.balance + excluded.balance`;

// A short debit changes nothing, and the transaction is rolled back; the CHECK constraint stays
// as the last line of defence.
const DEBIT = `
UPDATE accounts SET balance = balance - $3
WHERE user_id = $1 AND currency = $2 AND balance >= $3`;

const READ_BALANCE = "SELECT balance FROM accounts WHERE user_id = $1 AND currency = $2";

const READ_RESULT = `SELECT rpc, request, response FROM idempotency_keys WHERE user_id = $1 AND key = $2`;

// Takes the key for a moment: waits for an attempt still running, and is rolled back.
const PROBE_KEY = `
INSERT INTO idempotency_keys (user_id, key, rpc, request, response, create_time)
VALUES ($1, $2, '', '', '', now())
ON CONFLICT (user_id, key) DO NOTHING`;

const DELETE_EXPIRED_KEYS = `
DELETE FROM idempotency_keys WHERE ctid = ANY (ARRAY(
  SELECT ctid FROM idempotency_keys WHERE create_time < $1 LIMIT $2))`;

interface AccountChange {
  userId: string;
  currency: string;
  delta: Decimal;
}

/** The user accounts an entry changes, in lock order. House and external have no rows. */
export function accountChanges(postings: Posting[]): AccountChange[] {
  const changes: AccountChange[] = [];
  for (const p of postings) {
    const userId = userOfAccount(p.account);
    if (userId === undefined) continue;
    if (changes.some((c) => c.userId === userId && c.currency === p.currency)) {
      throw new Error(`two postings on ${p.account}/${p.currency} in one entry`);
    }
    changes.push({ userId, currency: p.currency, delta: new Decimal(p.amount) });
  }
  const order = (c: AccountChange) => `${c.userId}/${c.currency}`;
  return changes.sort((a, b) => (order(a) < order(b) ? -1 : order(a) > order(b) ? 1 : 0));
}

/**
 * Sends the queries in order: on a pipelining client all at once, in one write to the socket
 * (corked, so that each query's messages do not cost a system call of their own); one by one
 * otherwise.
 */
async function sendAll(
  client: PoolClient,
  queries: QueryConfig[],
): Promise<PromiseSettledResult<QueryResult>[]> {
  if (client.pipeline) {
    const socket = client.connection.stream;
    socket.cork();
    const sent = queries.map((q) => client.query(q));
    socket.uncork();
    return Promise.allSettled(sent);
  }
  const results: PromiseSettledResult<QueryResult>[] = [];
  for (const q of queries) {
    results.push(
      await client.query(q).then(
        (value) => ({ status: "fulfilled" as const, value }),
        (reason: unknown) => ({ status: "rejected" as const, reason }),
      ),
    );
  }
  return results;
}

function changeQuery({ userId, currency, delta }: AccountChange): QueryConfig {
  return delta.isPositive()
    ? { name: "credit", text: CREDIT, values: [userId, currency, delta.toFixed()] }
    : { name: "debit", text: DEBIT, values: [userId, currency, delta.negated().toFixed()] };
}

async function readResult(db: PoolClient | Pool, userId: string, key: string) {
  const { rows } = await db.query<StoredResult>(READ_RESULT, [userId, key]);
  return rows[0];
}

/**
 * Runs fn on a client of its own, rolling back whatever it left open if it throws. Errors on a
 * checked-out client reach no pool listener (and would crash the process), so one is attached
 * here, and a client whose connection failed is discarded instead of returned to the pool.
 */
/** Runs fn in a transaction that is always rolled back. */
function withRollback<T>(pool: Pool, fn: (client: PoolClient) => Promise<T>): Promise<T> {
  return withClient(pool, async (client) => {
    await client.query("BEGIN");
    const result = await fn(client);
    await client.query("ROLLBACK");
    return result;
  });
}

const MAX_ATTEMPTS = 3;

function insertEntry(w: JournalWrite): QueryConfig {
  const { entry, order } = w;
  // INSERT_ENTRY takes the order's user, transaction and time from the entry.
  if (
    order &&
    (order.id !== entry.orderId ||
      order.userId !== w.userId ||
      order.transactionId !== entry.id ||
      order.createTime.getTime() !== entry.createTime.getTime())
  ) {
    throw new Error("order does not belong to its entry");
  }
  return {
    name: "insert-entry",
    text: INSERT_ENTRY,
    values: [
      w.userId,
      w.key,
      w.rpc,
      w.request,
      w.response,
      entry.createTime,
      entry.id,
      entry.kind,
      entry.orderId ?? null,
      entry.postings.map((p) => p.account),
      entry.postings.map((p) => p.currency),
      entry.postings.map((p) => p.amount),
      order?.side ?? null,
      order?.asset ?? null,
      order?.quoteCurrency ?? null,
      order?.quantity ?? null,
      order?.limitPrice ?? null,
      order?.price ?? null,
      order?.notional ?? null,
      order ? rateSourceName(order.rateSource) : null,
      order?.rateAsOf ?? null,
    ],
  };
}

/** One try of the write transaction: BEGIN and every statement at once, then COMMIT or not. */
async function attemptWrite(
  pool: Pool,
  queries: QueryConfig[],
  w: JournalWrite,
  changes: AccountChange[],
): Promise<WriteOutcome> {
  return withClient(pool, async (client) => {
    const results = await sendAll(client, queries);
    const rowCounts = results.map((r) => {
      if (r.status === "rejected") throw r.reason;
      return r.value.rowCount;
    });
    if (rowCounts[1] === 0) {
      const stored = await readResult(client, w.userId, w.key);
      await client.query("ROLLBACK");
      if (!stored) throw new Error("idempotency key vanished while it was read");
      return { status: "duplicate", stored };
    }
    const short = changes.find((_, i) => rowCounts[i + 2] !== 1);
    if (!short) {
      await client.query("COMMIT");
      return { status: "written" };
    }
    await client.query("ROLLBACK");
    const { userId, currency } = short;
    const { rows } = await client.query<{ balance: string }>(READ_BALANCE, [userId, currency]);
    return {
      status: "insufficient",
      userId,
      currency,
      available: rows[0]?.balance ?? "0",
      required: short.delta.negated().toFixed(),
    };
  });
}

export interface JournalRepositoryOptions {
  /**
   * Name the write statements so that each connection parses them once. Off on the embedded
   * database: its one backend is shared by every connection, and a second connection's name would
   * collide with the first's.
   */
  preparedStatements: boolean;
}

export function createJournalRepository(
  pool: Pool,
  { preparedStatements }: JournalRepositoryOptions,
): JournalStore & {
  /** Deletes keys created before `before`, in batches; returns how many. */
  deleteKeysBefore(before: Date, batchSize?: number): Promise<number>;
} {
  const prepared = (q: QueryConfig): QueryConfig =>
    preparedStatements ? q : { text: q.text, values: q.values };
  return {
    async write(w: JournalWrite): Promise<WriteOutcome> {
      const changes = accountChanges(w.entry.postings);
      const queries = [{ text: "BEGIN" }, insertEntry(w), ...changes.map(changeQuery)].map(
        prepared,
      );
      // A debit found short may have raced a credit that landed just after it: try again while
      // the balance read after the rollback says the money is there.
      for (let attempt = 1; ; attempt++) {
        const outcome = await attemptWrite(pool, queries, w, changes);
        if (
          outcome.status !== "insufficient" ||
          attempt === MAX_ATTEMPTS ||
          new Decimal(outcome.available).lessThan(outcome.required)
        ) {
          return outcome;
        }
      }
    },

    findResult: (userId, key) =>
      withRollback(pool, async (tx) => {
        const probe = await tx.query(PROBE_KEY, [userId, key]);
        return probe.rowCount === 0 ? readResult(tx, userId, key) : undefined;
      }),

    async deleteKeysBefore(before, batchSize = 10_000) {
      let total = 0;
      for (;;) {
        const { rowCount } = await pool.query(DELETE_EXPIRED_KEYS, [before, batchSize]);
        total += rowCount ?? 0;
        if ((rowCount ?? 0) < batchSize) return total;
      }
    },
  };
}
