import { AppError } from "@coinmesh/lib/errors";
import { createTestDatabase, startTestServer, type TestDatabase } from "@coinmesh/lib/testing";
import { AccountService } from "@coinmesh/proto/order/v1/account_pb";
import { OrderService, Side } from "@coinmesh/proto/order/v1/order_pb";
import { Registry } from "prom-client";
import { afterAll, beforeAll, expect, test } from "vitest";
import { createLedgerMetrics } from "../src/ledger-metrics.ts";
import {
  createRateFake,
  ORDER_MIGRATIONS,
  rejection,
  startOrderService,
  startUserService,
} from "./services.ts";

// What callers see when the user or rate service is down, slow or recovering.

let db: TestDatabase;
let users: Awaited<ReturnType<typeof startUserService>>;
let rate: ReturnType<typeof createRateFake>;
let rateServer: Awaited<ReturnType<typeof startTestServer>>;
/** An address nothing listens on. */
let closedAddress: string;

beforeAll(async () => {
  db = await createTestDatabase(ORDER_MIGRATIONS);
  users = await startUserService();
  rate = createRateFake();
  rateServer = await startTestServer([rate.registration]);
  const closed = await startTestServer([]);
  closedAddress = closed.address;
  await closed.stop();
});
afterAll(async () => {
  await Promise.all([users?.stop(), rateServer?.stop()]);
  await db?.drop();
});

async function transactionCount(): Promise<number> {
  const { rows } = await db.pool.query<{ n: string }>("SELECT count(*) AS n FROM transactions");
  return Number(rows[0]?.n);
}

test("user service down: UNAVAILABLE and nothing written", async () => {
  const order = await startOrderService({
    db,
    userAddress: closedAddress,
    rateAddress: rateServer.address,
  });
  try {
    const before = await transactionCount();
    const accounts = order.connectClient(AccountService);
    const userId = "01a20000-0000-7000-8000-000000000010";
    const error = await rejection(
      accounts.deposit({ userId, currency: "USD", amount: "1", idempotencyKey: "k" }),
    );
    expect(error.code).toBe("Unavailable");
    expect(error.message).toContain("the user service is unavailable");
    expect(error.info?.reason).toBe("USER_SERVICE_UNAVAILABLE");
    const orders = order.connectClient(OrderService);
    const failures = await Promise.all([
      rejection(accounts.getBalances({ userId })),
      rejection(accounts.listTransactions({ userId })),
      rejection(orders.listOrders({ userId })),
      rejection(
        accounts.transfer({
          fromUserId: userId,
          toUserId: "01a20000-0000-7000-8000-000000000011",
          currency: "USD",
          amount: "1",
          idempotencyKey: "k",
        }),
      ),
      rejection(
        orders.placeOrder({
          userId,
          side: Side.BUY,
          asset: "BTC",
          quoteCurrency: "USD",
          quantity: "1",
          idempotencyKey: "k",
        }),
      ),
    ]);
    expect(failures.map((f) => f.code)).toEqual(Array(5).fill("Unavailable"));
    expect(await transactionCount()).toBe(before);
  } finally {
    await order.stop();
  }
});

test("rate service down before the currency list was fetched: UNAVAILABLE", async () => {
  const order = await startOrderService({
    db,
    userAddress: users.address,
    rateAddress: closedAddress,
  });
  try {
    const userId = await users.createUser();
    const accounts = order.connectClient(AccountService);
    const error = await rejection(
      accounts.deposit({ userId, currency: "USD", amount: "1", idempotencyKey: "k" }),
    );
    expect(error.code).toBe("Unavailable");
    expect(error.info?.reason).toBe("RATE_SERVICE_UNAVAILABLE");
    expect((await accounts.getBalances({ userId })).balances).toEqual([]);
  } finally {
    await order.stop();
  }
});

test("known users and the currency list are remembered: deposits go on while both services are down", async () => {
  const localUsers = await startUserService();
  const localRate = createRateFake();
  const localRateServer = await startTestServer([localRate.registration]);
  const order = await startOrderService({
    db,
    userAddress: localUsers.address,
    rateAddress: localRateServer.address,
  });
  try {
    const accounts = order.connectClient(AccountService);
    const orders = order.connectClient(OrderService);
    const userId = await localUsers.createUser();
    const stranger = await localUsers.createUser();
    await accounts.deposit({ userId, currency: "USD", amount: "100000", idempotencyKey: "a" });
    await localUsers.stop();
    localRate.state.listFailure = new AppError("unavailable", "down");
    await accounts.deposit({ userId, currency: "USD", amount: "1", idempotencyKey: "b" });
    expect((await accounts.getBalances({ userId })).balances[0]?.amount).toBe("100001");
    // A user never seen needs the user service.
    expect(
      (
        await rejection(
          accounts.deposit({ userId: stranger, currency: "USD", amount: "1", idempotencyKey: "c" }),
        )
      ).code,
    ).toBe("Unavailable");
    // Orders need a fresh price whatever is cached.
    localRate.state.rateFailure = new AppError("unavailable", "down");
    const error = await rejection(
      orders.placeOrder({
        userId,
        side: Side.BUY,
        asset: "BTC",
        quoteCurrency: "USD",
        quantity: "1",
        idempotencyKey: "d",
      }),
    );
    expect(error.code).toBe("Unavailable");
  } finally {
    await order.stop();
    await localRateServer.stop();
  }
});

test("a rate service slower than ORDER_UPSTREAM_TIMEOUT_MS: UNAVAILABLE before the caller's deadline, nothing written", async () => {
  const order = await startOrderService({
    db,
    userAddress: users.address,
    rateAddress: rateServer.address,
    upstreamTimeoutMs: 300,
  });
  try {
    const accounts = order.connectClient(AccountService);
    const orders = order.connectClient(OrderService);
    const userId = await users.createUser();
    await accounts.deposit({ userId, currency: "USD", amount: "100000", idempotencyKey: "t0" });
    const before = await transactionCount();
    rate.state.delayMs = 1_500;
    const error = await rejection(
      orders.placeOrder(
        {
          userId,
          side: Side.BUY,
          asset: "BTC",
          quoteCurrency: "USD",
          quantity: "1",
          idempotencyKey: "t1",
        },
        { timeoutMs: 10_000 },
      ),
    );
    expect(error.code).toBe("Unavailable");
    expect(error.info?.reason).toBe("RATE_UNAVAILABLE");
    expect(error.info?.metadata).toEqual({ cause: "deadline_exceeded" });
    expect(await transactionCount()).toBe(before);
    expect((await accounts.getBalances({ userId })).balances[0]?.amount).toBe("100000");
    expect((await orders.listOrders({ userId })).orders).toEqual([]);
  } finally {
    rate.state.delayMs = 0;
    await order.stop();
  }
});

test("outcomes are counted on coinmesh_orders_total and coinmesh_ledger_operations_total", async () => {
  const registry = new Registry();
  const order = await startOrderService({
    db,
    userAddress: users.address,
    rateAddress: rateServer.address,
    metrics: createLedgerMetrics(registry),
  });
  try {
    const accounts = order.connectClient(AccountService);
    const orders = order.connectClient(OrderService);
    const userId = await users.createUser();
    const buy = {
      userId,
      side: Side.BUY,
      asset: "BTC",
      quoteCurrency: "USD",
      quantity: "1",
      idempotencyKey: "m1",
    };
    await accounts.deposit({ userId, currency: "USD", amount: "100000", idempotencyKey: "m0" });
    await rejection(
      accounts.withdraw({ userId, currency: "EUR", amount: "1", idempotencyKey: "m" }),
    );
    await orders.placeOrder(buy);
    await rejection(orders.placeOrder({ ...buy, quantity: "5", idempotencyKey: "m2" }));
    rate.state.rateFailure = new AppError("unavailable", "down");
    await rejection(
      orders.placeOrder({ ...buy, side: Side.SELL, quantity: "0.1", idempotencyKey: "m3" }),
    );
    rate.state.rateFailure = undefined;

    const text = await registry.metrics();
    const sample = (name: string, labels: string) =>
      text.split("\n").find((line) => line.startsWith(`${name}{${labels}}`));
    expect(sample("coinmesh_ledger_operations_total", 'kind="deposit",outcome="ok"')).toMatch(
      / 1$/,
    );
    expect(
      sample("coinmesh_ledger_operations_total", 'kind="withdrawal",outcome="rejected"'),
    ).toMatch(/ 1$/);
    expect(sample("coinmesh_ledger_operations_total", 'kind="trade",outcome="ok"')).toMatch(/ 1$/);
    expect(sample("coinmesh_orders_total", 'side="buy",outcome="filled"')).toMatch(/ 1$/);
    expect(sample("coinmesh_orders_total", 'side="buy",outcome="rejected"')).toMatch(/ 1$/);
    expect(sample("coinmesh_orders_total", 'side="sell",outcome="error"')).toMatch(/ 1$/);
    expect(sample("coinmesh_orders_total", 'side="sell",outcome="filled"')).toMatch(/ 0$/);
  } finally {
    await order.stop();
  }
});
