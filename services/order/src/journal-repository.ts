import { type Pool, type PoolClient, withTransaction } from "@coinmesh/lib/postgres";
import { Decimal } from "./amounts.ts";
import { type Posting, userOfAccount } from "./journal.ts";
import { rateSourceName } from "./orders-repository.ts";
import type { JournalStore, JournalWrite, StoredResult, WriteOutcome } from "./write-once.ts";

/*
 * Every write of the service, PlaceOrder's included, is this one transaction (bench/sql/place-order.sql
 * runs the same statements for pgbench):
 *
 *   BEGIN
 *   INSERT_ENTRY              the idempotency key first, then transaction, postings and order,
 *                             all conditional on the key being new (one round trip)
 *   CREDIT or DEBIT           once per user account, in (user_id, currency) order
 *   COMMIT
 *
 * A retry of a running request blocks on the key's unique index inside INSERT_ENTRY until the
 * first attempt ends, before it touches any account; accounts are always locked in the same
 * order, so two transfers between the same accounts cannot deadlock.
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
  RETURNING id
), p AS (
  INSERT INTO postings (transaction_id, seq, account, currency, amount)
  SELECT t.id, x.seq, x.account, x.currency, x.amount
  FROM t, unnest($10::text[], $11::text[], $12::numeric[]) WITH ORDINALITY AS x (account, currency, amount, seq)
), o AS (
  INSERT INTO orders (id, user_id, side, asset, quote_currency, quantity, limit_price, price,
                      notional, rate_source, rate_as_of, transaction_id, create_time)
  SELECT $9, $1, $13, $14, $15, $16, $17, $18, $19, $20, $21, t.id, $6 FROM t
  WHERE $9::uuid IS NOT NULL
)
SELECT 1 FROM t`;

// A first credit creates the account; a debit never does (no account means nothing to take).
const CREDIT = `
INSERT INTO accounts AS a (user_id, currency, balance) VALUES ($1, $2, $3)
ON CONFLICT (user_id, currency) DO UPDATE SET balance = a.balance + excluded.balance`;

// The guard makes a short debit a no-op instead of an aborted transaction; the CHECK constraint
// stays as the last line of defence.
const DEBIT = `
UPDATE accounts SET balance = balance - $3
WHERE user_id = $1 AND currency = $2 AND balance >= $3`;

const LOCK_BALANCE = `SELECT balance FROM accounts WHERE user_id = $1 AND currency = $2 FOR UPDATE`;

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

/** Raised inside the transaction to roll it back. */
class Shortfall extends Error {
  readonly outcome: Extract<WriteOutcome, { status: "insufficient" }>;
  constructor(outcome: Shortfall["outcome"]) {
    super("insufficient funds");
    this.outcome = outcome;
  }
}

async function applyChange(tx: PoolClient, change: AccountChange): Promise<void> {
  const { userId, currency } = change;
  if (change.delta.isPositive()) {
    await tx.query({
      name: "credit",
      text: CREDIT,
      values: [userId, currency, change.delta.toFixed()],
    });
    return;
  }
  const amount = change.delta.negated().toFixed();
  const debit = { name: "debit", text: DEBIT, values: [userId, currency, amount] };
  if ((await tx.query(debit)).rowCount === 1) return;
  // Short, or no account. Lock the row so the figures reported are exact, and debit after all
  // if a concurrent credit arrived in between.
  const { rows } = await tx.query<{ balance: string }>(LOCK_BALANCE, [userId, currency]);
  const available = rows[0]?.balance ?? "0";
  if (
    new Decimal(available).greaterThanOrEqualTo(amount) &&
    (await tx.query(debit)).rowCount === 1
  ) {
    return;
  }
  throw new Shortfall({ status: "insufficient", userId, currency, available, required: amount });
}

async function readResult(db: PoolClient | Pool, userId: string, key: string) {
  const { rows } = await db.query<StoredResult>({
    name: "read-result",
    text: READ_RESULT,
    values: [userId, key],
  });
  return rows[0];
}

/** Runs fn in a transaction that is always rolled back. */
async function withRollback<T>(pool: Pool, fn: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query("BEGIN");
    return await fn(client);
  } finally {
    await client.query("ROLLBACK").catch((err: Error) => {
      broken = err;
    });
    client.release(broken);
  }
}

export function createJournalRepository(pool: Pool): JournalStore & {
  /** Deletes keys created before `before`, in batches; returns how many. */
  deleteKeysBefore(before: Date, batchSize?: number): Promise<number>;
} {
  return {
    async write(w: JournalWrite): Promise<WriteOutcome> {
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
      const changes = accountChanges(entry.postings);
      try {
        return await withTransaction(pool, async (tx) => {
          const inserted = await tx.query({
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
          });
          if (inserted.rowCount === 0) {
            const stored = await readResult(tx, w.userId, w.key);
            if (!stored) throw new Error("idempotency key vanished while it was read");
            return { status: "duplicate", stored };
          }
          for (const change of changes) await applyChange(tx, change);
          return { status: "written" };
        });
      } catch (err) {
        if (err instanceof Shortfall) return err.outcome;
        throw err;
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
