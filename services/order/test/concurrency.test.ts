import { toBinary } from "@bufbuild/protobuf";
import { AppError } from "@coinmesh/lib/errors";
import { silentLogger } from "@coinmesh/lib/log";
import { createPool, type Pool } from "@coinmesh/lib/postgres";
import { createTestDatabase, type TestDatabase } from "@coinmesh/lib/testing";
import {
  DepositResponseSchema,
  type Transaction,
  TransferResponseSchema,
  WithdrawResponseSchema,
} from "@coinmesh/proto/order/v1/account_pb";
import { type Order, PlaceOrderResponseSchema, Side } from "@coinmesh/proto/order/v1/order_pb";
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, expect, test } from "vitest";
import { Decimal } from "../src/amounts.ts";
import { createJournalRepository } from "../src/journal-repository.ts";
import { createLedger } from "../src/ledger.ts";
import { noLedgerMetrics } from "../src/ledger-metrics.ts";
import { createLedgerRepository } from "../src/ledger-repository.ts";
import { createOrders } from "../src/orders.ts";
import { createOrdersRepository } from "../src/orders-repository.ts";
import { createWriteOnce } from "../src/write-once.ts";
import { fakeCurrencies, fakeRates, fakeUsers, seededRandom } from "./fakes.ts";
import { ORDER_MIGRATIONS } from "./services.ts";

const WORKERS = 32;
const OPERATIONS = 10_000;
const USERS = 24;
const SEED = 20261122;
const CURRENCIES = ["USD", "EUR", "BTC", "ETH"];
const PAIRS = [
  ["BTC", "USD", "64000.123456789"],
  ["ETH", "USD", "3000.5"],
  ["BTC", "EUR", "59000.987654321987654321"],
  ["ETH", "EUR", "2800.1234"],
] as const;

let db: TestDatabase;
/** Pipelining, as main.ts opens it. */
let pool: Pool;
beforeAll(async () => {
  db = await createTestDatabase(ORDER_MIGRATIONS);
  pool = createPool(db.url, silentLogger(), { max: WORKERS + 8, pipeline: true });
});
afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

/** A change to one user account, as a response reports it. */
interface Effect {
  account: string;
  currency: string;
  amount: string;
}

/** One request as a client sends it; sending it again is a retry. */
interface Operation {
  key: string;
  /** The idempotency scope. */
  userId: string;
  /** Sends the request: the response bytes and what it says it did to user accounts. */
  send(): Promise<{ bytes: Uint8Array; effects: Effect[] }>;
}

function userEffects(transaction: Transaction | undefined): Effect[] {
  if (!transaction) throw new Error("response without a transaction");
  return transaction.postings.filter((p) => p.account.startsWith("user:"));
}

function orderEffects(order: Order | undefined): Effect[] {
  if (!order) throw new Error("response without an order");
  const account = `user:${order.userId}`;
  const [paid, paidAmount, got, gotAmount] =
    order.side === Side.BUY
      ? [order.quoteCurrency, order.notional, order.asset, order.quantity]
      : [order.asset, order.quantity, order.quoteCurrency, order.notional];
  return [
    { account, currency: paid, amount: `-${paidAmount}` },
    { account, currency: got, amount: gotAmount },
  ];
}

async function rowsOf<T>(sql: string): Promise<T[]> {
  return (await db.pool.query(sql)).rows as T[];
}

test("32 workers, 10,000 operations with retries: money is conserved, nothing applies twice", async (ctx) => {
  if (!db.real) ctx.skip("needs the real Postgres: the embedded fallback serializes transactions");
  const random = seededRandom(SEED);
  const userIds = Array.from({ length: USERS }, () => uuidv7());
  const prices = new Map(PAIRS.map(([asset, quote, price]) => [`${asset}/${quote}`, price]));
  const deps = {
    writeOnce: createWriteOnce(createJournalRepository(pool, { preparedStatements: true })),
    users: fakeUsers(userIds),
    currencies: fakeCurrencies(CURRENCIES),
    metrics: noLedgerMetrics,
    clock: () => new Date(),
    newId: uuidv7,
    maxAmount: new Decimal("1e12"),
  };
  const ledger = createLedger({ ...deps, reads: createLedgerRepository(pool) });
  // Prices move on every quote and carry many fractional digits, so rounding is exercised.
  const orders = createOrders({
    ...deps,
    reads: createOrdersRepository(pool),
    rates: fakeRates((asset, quote) =>
      new Decimal(prices.get(`${asset}/${quote}`) ?? "1")
        .times(1 + random.next() / 100)
        .toDecimalPlaces(15)
        .toFixed(),
    ),
  });
  const call = {};

  /** A new random request; `key` and `userId` are given to reuse a key with another payload. */
  function newOperation(key: string, userId = random.pick(userIds)): Operation {
    const currency = random.pick(CURRENCIES);
    const roll = random.next();
    // Deposits dominate at first so that later debits mostly find money.
    const deposits = issued.length < 1_000 ? 0.8 : 0.3;
    if (roll < deposits) {
      const request = { userId, currency, amount: random.decimal(5, 18), idempotencyKey: key };
      return {
        key,
        userId,
        async send() {
          const response = await ledger.deposit(request, call);
          return {
            bytes: toBinary(DepositResponseSchema, response),
            effects: userEffects(response.transaction),
          };
        },
      };
    }
    if (roll < deposits + 0.2) {
      const request = { userId, currency, amount: random.decimal(4, 18), idempotencyKey: key };
      return {
        key,
        userId,
        async send() {
          const response = await ledger.withdraw(request, call);
          return {
            bytes: toBinary(WithdrawResponseSchema, response),
            effects: userEffects(response.transaction),
          };
        },
      };
    }
    if (roll < deposits + 0.45) {
      const request = {
        fromUserId: userId,
        toUserId: random.pick(userIds.filter((u) => u !== userId)),
        currency,
        amount: random.decimal(4, 18),
        idempotencyKey: key,
      };
      return {
        key,
        userId,
        async send() {
          const response = await ledger.transfer(request, call);
          return {
            bytes: toBinary(TransferResponseSchema, response),
            effects: userEffects(response.transaction),
          };
        },
      };
    }
    const [asset, quoteCurrency] = random.pick(PAIRS);
    const request = {
      userId,
      side: random.next() < 0.5 ? Side.BUY : Side.SELL,
      asset,
      quoteCurrency,
      quantity: random.decimal(1, 18),
      idempotencyKey: key,
    };
    return {
      key,
      userId,
      async send() {
        const response = await orders.placeOrder(request, call);
        return {
          bytes: toBinary(PlaceOrderResponseSchema, response),
          effects: orderEffects(response.order),
        };
      },
    };
  }

  // What every attempt of every key returned, by "<user>/<key>".
  const results = new Map<
    string,
    { successes: Uint8Array[]; effects: Effect[]; errors: string[] }
  >();
  const resultsOf = (op: Operation) => {
    const id = `${op.userId}/${op.key}`;
    let r = results.get(id);
    if (!r) {
      r = { successes: [], effects: [], errors: [] };
      results.set(id, r);
    }
    return r;
  };
  const succeeded: Operation[] = [];
  const mismatchErrors: string[] = [];

  // The queue: mostly new requests; about 12% retries of earlier ones (often still running); 1%
  // reuses of a succeeded key by its user with another payload, which must not execute.
  const issued: Operation[] = [];
  let sent = 0;
  let retries = 0;
  let mismatches = 0;
  async function worker() {
    while (sent < OPERATIONS) {
      sent++;
      const roll = random.next();
      if (roll < 0.01 && succeeded.length > 0) {
        const original = random.pick(succeeded);
        mismatches++;
        try {
          await newOperation(original.key, original.userId).send();
          mismatchErrors.push(`${original.key} executed again with another payload`);
        } catch (err) {
          if (!(err instanceof AppError && err.kind === "already_exists")) throw err;
        }
        continue;
      }
      let op: Operation;
      if (roll < 0.09 && issued.length > 50) {
        op = random.pick(issued.slice(-50));
        retries++;
      } else if (roll < 0.13 && issued.length > 50) {
        op = random.pick(issued);
        retries++;
      } else {
        op = newOperation(`op-${issued.length}`);
        issued.push(op);
      }
      const r = resultsOf(op);
      try {
        const { bytes, effects } = await op.send();
        if (r.successes.length === 0) {
          r.effects = effects;
          succeeded.push(op);
        }
        r.successes.push(bytes);
      } catch (err) {
        // Only a short balance may fail a well-formed request here.
        if (!(err instanceof AppError && err.kind === "failed_precondition")) throw err;
        r.errors.push(err.message);
      }
    }
  }
  await Promise.all(Array.from({ length: WORKERS }, worker));

  expect(mismatchErrors).toEqual([]);
  expect(retries).toBeGreaterThan(800);
  expect(mismatches).toBeGreaterThan(50);

  // Every success of one key returned the same bytes.
  for (const [id, r] of results) {
    for (const bytes of r.successes) {
      expect(Buffer.from(bytes).equals(Buffer.from(r.successes[0] as Uint8Array)), id).toBe(true);
    }
  }
  const executed = [...results.values()].filter((r) => r.successes.length > 0);
  expect(executed.length).toBeGreaterThan(4_000);

  // One transaction and one stored key per executed request: none applied twice.
  const [counts] = await rowsOf<{ transactions: string; keys: string }>(`
    SELECT (SELECT count(*) FROM transactions) AS transactions,
           (SELECT count(*) FROM idempotency_keys) AS keys`);
  expect(Number(counts?.transactions)).toBe(executed.length);
  expect(Number(counts?.keys)).toBe(executed.length);

  // User balances are exactly what the successful responses said they did.
  const model = new Map<string, Decimal>();
  for (const r of executed) {
    for (const e of r.effects) {
      const id = `${e.account.slice("user:".length)}/${e.currency}`;
      model.set(id, (model.get(id) ?? new Decimal(0)).plus(e.amount));
    }
  }
  const balances = await rowsOf<{ id: string; balance: string }>(
    "SELECT user_id || '/' || currency AS id, balance FROM accounts",
  );
  const stored = new Map(balances.map((b) => [b.id, new Decimal(b.balance)]));
  for (const id of new Set([...model.keys(), ...stored.keys()])) {
    expect(stored.get(id)?.toFixed() ?? "0", id).toBe(model.get(id)?.toFixed() ?? "0");
  }

  // No negative balance, and every balance is the sum of its postings.
  expect(await rowsOf("SELECT * FROM accounts WHERE balance < 0")).toEqual([]);
  expect(
    await rowsOf(`
      SELECT a.user_id, a.currency FROM accounts a
      LEFT JOIN (SELECT account, currency, sum(amount) AS total FROM postings GROUP BY 1, 2) p
        ON p.account = 'user:' || a.user_id AND p.currency = a.currency
      WHERE a.balance <> coalesce(p.total, 0)`),
  ).toEqual([]);

  // Every transaction balances per currency, and per currency user balances, house and external
  // sum to zero.
  expect(
    await rowsOf(
      "SELECT transaction_id, currency FROM postings GROUP BY 1, 2 HAVING sum(amount) <> 0",
    ),
  ).toEqual([]);
  expect(
    await rowsOf(`
      SELECT currency, sum(total) FROM (
        SELECT currency, balance AS total FROM accounts
        UNION ALL
        SELECT currency, amount FROM postings WHERE account IN ('house', 'external')
      ) money GROUP BY currency HAVING sum(total) <> 0`),
  ).toEqual([]);
  const [houseTrades] = await rowsOf<{ n: string }>(
    "SELECT count(*) AS n FROM postings WHERE account = 'house'",
  );
  expect(Number(houseTrades?.n)).toBeGreaterThan(1_000);

  // Every order's notional is quantity × price rounded in the house's favour, and its trade moved
  // exactly the quantity and the notional.
  expect(
    await rowsOf(`
      SELECT id FROM orders WHERE notional * 1e18 <> CASE side
        WHEN 'buy' THEN ceil(quantity * price * 1e18)
        ELSE floor(quantity * price * 1e18) END`),
  ).toEqual([]);
  expect(
    await rowsOf(`
      SELECT o.id FROM orders o
      JOIN transactions t ON t.id = o.transaction_id AND t.order_id = o.id AND t.kind = 'trade'
      JOIN postings q ON q.transaction_id = t.id AND q.account = 'user:' || o.user_id
        AND q.currency = o.quote_currency
      JOIN postings b ON b.transaction_id = t.id AND b.account = 'user:' || o.user_id
        AND b.currency = o.asset
      WHERE q.amount <> CASE o.side WHEN 'buy' THEN -o.notional ELSE o.notional END
         OR b.amount <> CASE o.side WHEN 'buy' THEN o.quantity ELSE -o.quantity END`),
  ).toEqual([]);
  const [orderCounts] = await rowsOf<{ orders: string; trades: string }>(`
    SELECT (SELECT count(*) FROM orders) AS orders,
           (SELECT count(*) FROM transactions WHERE kind = 'trade') AS trades`);
  expect(orderCounts?.orders).toBe(orderCounts?.trades);
}, 120_000);
