import { toBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { AppError } from "@coinmesh/lib/errors";
import { AccountService, TransactionKind } from "@coinmesh/proto/order/v1/account_pb";
import {
  OrderService,
  OrderStatus,
  PlaceOrderResponseSchema,
  Side,
} from "@coinmesh/proto/order/v1/order_pb";
import { RateSource } from "@coinmesh/proto/rate/v1/rate_pb";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { rejection, startStack } from "./services.ts";

let stack: Awaited<ReturnType<typeof startStack>>;
let accounts: ReturnType<typeof stack.order.connectClient<typeof AccountService>>;
let orders: ReturnType<typeof stack.order.connectClient<typeof OrderService>>;
let grpcOrders: ReturnType<typeof stack.order.grpcClient<typeof OrderService>>;
let keys = 0;
const newKey = () => `order-key-${++keys}`;

beforeAll(async () => {
  stack = await startStack({ maxAmount: "1000000" });
  stack.rate.prices.set("SHIB/USD", "0.00001");
  stack.rate.currencies.push("SHIB");
  accounts = stack.order.connectClient(AccountService);
  orders = stack.order.connectClient(OrderService);
  grpcOrders = stack.order.grpcClient(OrderService);
});
afterAll(() => stack?.stop());
afterEach(() => {
  stack.rate.rateFailure = undefined;
  stack.rate.delayMs = 0;
  stack.rate.hold = undefined;
  stack.rate.source = RateSource.CACHE;
  stack.rate.asOf = undefined;
  stack.rate.prices.set("BTC/USD", "64000.5");
});

const balancesOf = (userId: string) => stack.balancesOf(userId);
const funded = (amounts: Record<string, string>) => stack.funded(amounts);

/** A promise and the function that resolves it. */
function latch() {
  let open = () => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

const buyBtc = (userId: string, quantity: string, extra: { limitPrice?: string } = {}) => ({
  userId,
  side: Side.BUY,
  asset: "BTC",
  quoteCurrency: "USD",
  quantity,
  idempotencyKey: newKey(),
  ...extra,
});

describe("PlaceOrder", () => {
  test("a buy pays quantity × price rounded up and records the fill", async () => {
    const userId = await funded({ USD: "1000" });
    stack.rate.prices.set("ETH/USD", "3000.333333333333333333");
    const asOf = new Date(Math.floor(Date.now() / 1_000) * 1_000 - 4_877); // millisecond part .123
    stack.rate.asOf = asOf;
    const { order } = await orders.placeOrder({
      userId,
      side: Side.BUY,
      asset: "eth",
      quoteCurrency: "usd",
      quantity: "0.1",
      idempotencyKey: newKey(),
    });
    // 0.1 × 3000.333333333333333333 = 300.0333333333333333333 → up to 18 digits
    expect(order).toMatchObject({
      userId,
      side: Side.BUY,
      asset: "ETH",
      quoteCurrency: "USD",
      quantity: "0.1",
      price: "3000.333333333333333333",
      notional: "300.033333333333333334",
      status: OrderStatus.FILLED,
      rateSource: RateSource.CACHE,
    });
    expect(order?.limitPrice).toBeUndefined();
    expect(order?.rateAsOf && timestampDate(order.rateAsOf)).toEqual(asOf);
    expect(await balancesOf(userId)).toEqual({ ETH: "0.1", USD: "699.966666666666666666" });

    const { transactions } = await accounts.listTransactions({ userId, pageSize: 1 });
    expect(transactions[0]).toMatchObject({
      id: order?.transactionId,
      kind: TransactionKind.TRADE,
      orderId: order?.id,
    });
    expect(transactions[0]?.postings.map((p) => [p.account, p.currency, p.amount])).toEqual([
      [`user:${userId}`, "USD", "-300.033333333333333334"],
      ["house", "USD", "300.033333333333333334"],
      ["house", "ETH", "-0.1"],
      [`user:${userId}`, "ETH", "0.1"],
    ]);
  });

  test("a sell receives quantity × price rounded down", async () => {
    const userId = await funded({ ETH: "1" });
    stack.rate.prices.set("ETH/USD", "3000.333333333333333333");
    const { order } = await orders.placeOrder({
      userId,
      side: Side.SELL,
      asset: "ETH",
      quoteCurrency: "USD",
      quantity: "0.1",
      idempotencyKey: newKey(),
    });
    expect(order?.notional).toBe("300.033333333333333333");
    expect(await balancesOf(userId)).toEqual({ ETH: "0.9", USD: "300.033333333333333333" });
  });

  test("GetOrder returns the order exactly as PlaceOrder did", async () => {
    const userId = await funded({ USD: "100000" });
    const placed = await orders.placeOrder(buyBtc(userId, "0.25", { limitPrice: "70000" }));
    expect(placed.order?.limitPrice).toBe("70000");
    const { order } = await orders.getOrder({ id: placed.order?.id ?? "" });
    expect(order).toEqual(placed.order);
  });

  test("a limit the price has crossed: FAILED_PRECONDITION and nothing moves", async () => {
    const userId = await funded({ USD: "100000", BTC: "1" });
    const buy = await rejection(orders.placeOrder(buyBtc(userId, "1", { limitPrice: "64000.4" })));
    expect(buy.code).toBe("FailedPrecondition");
    expect(buy.message).toBe("BTC/USD: price 64000.5 is above the buy limit 64000.4");
    expect(buy.info?.reason).toBe("LIMIT_PRICE_CROSSED");
    expect(buy.info?.metadata).toEqual({ side: "buy", price: "64000.5", limit_price: "64000.4" });
    expect(buy.preconditions).toEqual([
      expect.objectContaining({
        type: "LIMIT_PRICE",
        subject: "BTC/USD",
        description: "price 64000.5 is above the buy limit 64000.4",
      }),
    ]);
    const sell = await rejection(
      orders.placeOrder({ ...buyBtc(userId, "1", { limitPrice: "64000.60" }), side: Side.SELL }),
    );
    expect(sell.code).toBe("FailedPrecondition");
    expect(sell.message).toBe("BTC/USD: price 64000.5 is below the sell limit 64000.6");
    expect(sell.info?.metadata).toEqual({ side: "sell", price: "64000.5", limit_price: "64000.6" });
    expect(await balancesOf(userId)).toEqual({ BTC: "1", USD: "100000" });
    expect((await orders.listOrders({ userId })).orders).toEqual([]);

    // A limit the price meets exactly fills.
    await orders.placeOrder(buyBtc(userId, "1", { limitPrice: "64000.5" }));
    expect(await balancesOf(userId)).toEqual({ BTC: "2", USD: "35999.5" });
  });

  test("insufficient funds: FAILED_PRECONDITION with the shortfall, and nothing moves", async () => {
    const userId = await funded({ USD: "64000" });
    const error = await rejection(orders.placeOrder(buyBtc(userId, "1")));
    expect(error.code).toBe("FailedPrecondition");
    expect(error.info?.metadata).toEqual({
      currency: "USD",
      available: "64000",
      required: "64000.5",
      shortfall: "0.5",
    });
    expect(await balancesOf(userId)).toEqual({ USD: "64000" });
    expect((await orders.listOrders({ userId })).orders).toEqual([]);
  });

  test("a price older than ORDER_MAX_RATE_AGE_SECONDS is UNAVAILABLE RATE_STALE and nothing moves", async () => {
    const userId = await funded({ USD: "100000" });
    const asOf = new Date(Date.now() - 121_000);
    stack.rate.asOf = asOf;
    const error = await rejection(orders.placeOrder(buyBtc(userId, "1")));
    expect(error.code).toBe("Unavailable");
    expect(error.message).toMatch(
      /the price of BTC\/USD is 12\d s old; orders fill only at a price at most 120 s old/,
    );
    expect(error.info?.reason).toBe("RATE_STALE");
    expect(error.info?.metadata).toEqual({
      as_of: asOf.toISOString(),
      max_age_seconds: "120",
    });
    expect(await balancesOf(userId)).toEqual({ USD: "100000" });
    expect((await orders.listOrders({ userId })).orders).toEqual([]);

    // Just inside the bound (a stale-while-revalidate answer) still fills.
    stack.rate.asOf = new Date(Date.now() - 100_000);
    const { order } = await orders.placeOrder(buyBtc(userId, "1"));
    expect(order?.status).toBe(OrderStatus.FILLED);
  });

  test("a snapshot price is refused unless snapshot rates are allowed", async () => {
    const userId = await funded({ USD: "100000" });
    stack.rate.source = RateSource.SNAPSHOT;
    const asOf = new Date("2026-11-20T12:00:00.000Z");
    stack.rate.asOf = asOf;
    const error = await rejection(orders.placeOrder(buyBtc(userId, "1")));
    expect(error.code).toBe("Unavailable");
    expect(error.message).toContain("bundled snapshot");
    expect(error.info?.reason).toBe("RATE_STALE");
    expect(error.info?.metadata).toEqual({ source: "SNAPSHOT", as_of: asOf.toISOString() });
    expect(await balancesOf(userId)).toEqual({ USD: "100000" });
  });

  test("with snapshot rates allowed (the offline default) an old snapshot price fills and says so", async () => {
    const offline = await startStack({ allowSnapshotRates: true });
    try {
      offline.rate.source = RateSource.SNAPSHOT;
      offline.rate.asOf = new Date("2026-11-20T12:00:00.000Z");
      const userId = await offline.funded({ USD: "100000" });
      const client = offline.order.connectClient(OrderService);
      const { order } = await client.placeOrder(buyBtc(userId, "1"));
      expect(order?.rateSource).toBe(RateSource.SNAPSHOT);
      expect((await client.getOrder({ id: order?.id ?? "" })).order?.rateSource).toBe(
        RateSource.SNAPSHOT,
      );
    } finally {
      await offline.stop();
    }
  });

  test("a price the rate service will not compute is its FAILED_PRECONDITION, details included", async () => {
    const userId = await funded({ USD: "100000" });
    stack.rate.rateFailure = new AppError("failed_precondition", "out of range", {
      reason: "PRICE_OUT_OF_RANGE",
      metadata: { base: "BTC", quote: "USD" },
    });
    const error = await rejection(orders.placeOrder(buyBtc(userId, "1")));
    expect(error.code).toBe("FailedPrecondition");
    expect(error.info?.reason).toBe("PRICE_OUT_OF_RANGE");
    expect(error.info?.metadata).toEqual({ base: "BTC", quote: "USD" });
    expect(await balancesOf(userId)).toEqual({ USD: "100000" });
  });

  test("an unexpected rate service failure is INTERNAL without its text", async () => {
    const userId = await funded({ USD: "100000" });
    stack.rate.rateFailure = new AppError("invalid_argument", "secret internals");
    const error = await rejection(orders.placeOrder(buyBtc(userId, "1")));
    expect(error.code).toBe("Internal");
    expect(error.message).not.toContain("secret");
    expect(await balancesOf(userId)).toEqual({ USD: "100000" });
  });

  test("a price the rate service refuses (too old, upstream down) is UNAVAILABLE and nothing moves", async () => {
    const userId = await funded({ USD: "100000" });
    stack.rate.rateFailure = new AppError("unavailable", "BTC/USD is older than 10m");
    const error = await rejection(orders.placeOrder(buyBtc(userId, "1")));
    expect(error.code).toBe("Unavailable");
    expect(error.message).toContain("the price of BTC/USD is unavailable");
    expect(error.info?.reason).toBe("RATE_UNAVAILABLE");
    expect(await balancesOf(userId)).toEqual({ USD: "100000" });
  });

  test("a pair the rate service does not quote is FAILED_PRECONDITION", async () => {
    const userId = await funded({ USD: "100000" });
    const error = await rejection(
      orders.placeOrder({ ...buyBtc(userId, "1"), asset: "XAU", quoteCurrency: "EUR" }),
    );
    expect(error.code).toBe("FailedPrecondition");
    expect(error.info?.reason).toBe("RATE_NOT_FOUND");
  });

  test("the rate call's deadline is the caller's, capped by the upstream timeout", async () => {
    const userId = await funded({ USD: "100000" });
    let startedAt = Date.now();
    await orders.placeOrder(buyBtc(userId, "0.01"), { timeoutMs: 1_000 });
    expect(stack.rate.lastDeadline).toBeGreaterThan(startedAt + 500);
    expect(stack.rate.lastDeadline).toBeLessThanOrEqual(startedAt + 1_000 + 50);
    startedAt = Date.now();
    await orders.placeOrder(buyBtc(userId, "0.01"));
    expect(stack.rate.lastDeadline).toBeGreaterThan(startedAt + 1_500);
    expect(stack.rate.lastDeadline).toBeLessThanOrEqual(startedAt + 2_000 + 50);
  });

  test("a slow rate service is cut off at the caller's deadline and nothing moves", async () => {
    const userId = await funded({ USD: "100000" });
    stack.rate.delayMs = 3_000;
    const startedAt = Date.now();
    const error = await rejection(orders.placeOrder(buyBtc(userId, "1"), { timeoutMs: 300 }));
    expect(Date.now() - startedAt).toBeLessThan(2_000);
    expect(error.code).toBe("DeadlineExceeded");
    stack.rate.delayMs = 0;
    expect(await balancesOf(userId)).toEqual({ USD: "100000" });
    expect((await orders.listOrders({ userId })).orders).toEqual([]);
  });

  test("reports every invalid field at once", async () => {
    const error = await rejection(
      orders.placeOrder({
        userId: "u",
        side: Side.UNSPECIFIED,
        asset: "BTC",
        quoteCurrency: "btc",
        quantity: "-1",
        limitPrice: "0",
        idempotencyKey: "",
      }),
    );
    expect(error.code).toBe("InvalidArgument");
    expect(error.violations).toEqual([
      "user_id: must be a UUID",
      "side: must be SIDE_BUY or SIDE_SELL",
      "quote_currency: must differ from asset",
      'quantity: must be a decimal number such as "12.5" (digits and one optional point)',
      "limit_price: must be greater than zero",
      "idempotency_key: is required",
    ]);
  });

  test("a limit_price beyond 20 integer digits is INVALID_ARGUMENT; 20 digits fill", async () => {
    const userId = await funded({ USD: "100000" });
    const error = await rejection(
      orders.placeOrder(buyBtc(userId, "1", { limitPrice: "100000000000000000000" })),
    );
    expect(error.code).toBe("InvalidArgument");
    expect(error.violations).toEqual(["limit_price: must have at most 20 integer digits"]);
    const fraction = await rejection(
      orders.placeOrder(buyBtc(userId, "1", { limitPrice: "70000.0000000000000000001" })),
    );
    expect(fraction.violations).toEqual(["limit_price: must have at most 18 fractional digits"]);
    expect(await balancesOf(userId)).toEqual({ USD: "100000" });

    const largest = "99999999999999999999.999999999999999999";
    const { order } = await orders.placeOrder(buyBtc(userId, "1", { limitPrice: largest }));
    expect(order?.limitPrice).toBe(largest);
    expect((await orders.getOrder({ id: order?.id ?? "" })).order?.limitPrice).toBe(largest);
  });

  test("unknown currencies and users are rejected before any price is fetched", async () => {
    const userId = await stack.createUser();
    const unknown = await rejection(
      orders.placeOrder({ ...buyBtc(userId, "1"), asset: "NOPE", quoteCurrency: "ZZZ" }),
    );
    expect(unknown.violations).toEqual([
      "asset: unknown currency NOPE",
      "quote_currency: unknown currency ZZZ",
    ]);
    const nobody = await rejection(
      orders.placeOrder(buyBtc("01a20000-0000-7000-8000-000000000005", "1")),
    );
    expect(nobody.code).toBe("NotFound");
  });

  test("a quantity whose notional exceeds the maximum or rounds to zero is INVALID_ARGUMENT", async () => {
    const userId = await funded({ USD: "1000000", SHIB: "1" });
    const large = await rejection(orders.placeOrder(buyBtc(userId, "16")));
    expect(large.violations).toEqual([
      "quantity: 16 BTC at 64000.5 comes to 1024008 USD, above the maximum 1000000",
    ]);
    const dust = await rejection(
      orders.placeOrder({
        ...buyBtc(userId, "0.000000000000000001"),
        side: Side.SELL,
        asset: "SHIB",
      }),
    );
    expect(dust.violations).toEqual([
      "quantity: 0.000000000000000001 SHIB at 0.00001 comes to 0 USD, too small to trade",
    ]);
    expect(await balancesOf(userId)).toEqual({ SHIB: "1", USD: "1000000" });
  });

  test("a retry returns the original bytes even after the price moved or the rate service went down", async () => {
    const userId = await funded({ USD: "100000" });
    const request = buyBtc(userId, "0.5", { limitPrice: "65000" });
    const first = await grpcOrders.placeOrder(request);
    const bytes = toBinary(PlaceOrderResponseSchema, first);

    stack.rate.prices.set("BTC/USD", "70000"); // past the limit now
    expect(toBinary(PlaceOrderResponseSchema, await grpcOrders.placeOrder(request))).toEqual(bytes);
    stack.rate.rateFailure = new AppError("unavailable", "upstream down");
    expect(toBinary(PlaceOrderResponseSchema, await grpcOrders.placeOrder(request))).toEqual(bytes);

    expect((await orders.listOrders({ userId })).orders).toHaveLength(1);
    expect(await balancesOf(userId)).toEqual({ BTC: "0.5", USD: "67999.75" });
  });

  test("concurrent attempts with one key fill one order", async () => {
    const userId = await funded({ USD: "100000" });
    const request = buyBtc(userId, "1");
    const results = await Promise.all(
      Array.from({ length: 6 }, () => grpcOrders.placeOrder(request)),
    );
    const distinct = new Set(
      results.map((r) => Buffer.from(toBinary(PlaceOrderResponseSchema, r)).toString("hex")),
    );
    expect(distinct.size).toBe(1);
    expect((await orders.listOrders({ userId })).orders).toHaveLength(1);
    expect(await balancesOf(userId)).toEqual({ BTC: "1", USD: "35999.5" });
  });

  test("a retry while the first attempt waits for its price gets the first attempt's bytes, though its own price fails", async () => {
    const userId = await funded({ USD: "100000" });
    const request = buyBtc(userId, "0.5");
    const arrived = latch();
    const released = latch();
    stack.rate.hold = () => {
      arrived.open();
      return released.opened;
    };
    const first = grpcOrders.placeOrder(request);
    await arrived.opened;
    // From now on the rate service is down; the first attempt's price is still on its way.
    stack.rate.hold = undefined;
    stack.rate.rateFailure = new AppError("unavailable", "upstream down");
    const retry = grpcOrders.placeOrder(request).then(
      (response) => toBinary(PlaceOrderResponseSchema, response),
      (err: unknown) => err,
    );
    // A retry that did not wait would fail at once; give it the time to.
    await Promise.race([retry, new Promise((resolve) => setTimeout(resolve, 300))]);
    released.open();
    const bytes = toBinary(PlaceOrderResponseSchema, await first);
    expect(await retry).toEqual(bytes);
    expect((await orders.listOrders({ userId })).orders).toHaveLength(1);
    expect(await balancesOf(userId)).toEqual({ BTC: "0.5", USD: "67999.75" });
  });

  test("the same key with another order fails with ALREADY_EXISTS naming the fields", async () => {
    const userId = await funded({ USD: "100000" });
    const request = buyBtc(userId, "0.1");
    await orders.placeOrder(request);
    const error = await rejection(
      orders.placeOrder({ ...request, quantity: "0.2", limitPrice: "1" }),
    );
    expect(error.code).toBe("AlreadyExists");
    expect(error.info?.metadata).toMatchObject({
      rpc: "PlaceOrder",
      fields: "quantity,limit_price",
    });
  });
});

describe("GetOrder", () => {
  test("an invalid id is INVALID_ARGUMENT, an unknown one NOT_FOUND", async () => {
    expect((await rejection(orders.getOrder({ id: "42" }))).violations).toEqual([
      "id: must be a UUID",
    ]);
    const missing = await rejection(
      orders.getOrder({ id: "01a20000-0000-7000-8000-000000000006" }),
    );
    expect(missing.code).toBe("NotFound");
    expect(missing.message).toBe("order 01a20000-0000-7000-8000-000000000006 not found");
  });
});

describe("ListOrders", () => {
  test("pages through a user's orders, newest first", async () => {
    const userId = await funded({ USD: "100000" });
    const ids: string[] = [];
    for (let i = 1; i <= 3; i++) {
      const { order } = await orders.placeOrder(buyBtc(userId, `0.0${i}`));
      ids.unshift(order?.id ?? "");
    }
    const first = await orders.listOrders({ userId, pageSize: 2 });
    const second = await orders.listOrders({ userId, pageSize: 2, pageToken: first.nextPageToken });
    expect([...first.orders, ...second.orders].map((o) => o.id)).toEqual(ids);
    expect(second.nextPageToken).toBe("");
    expect(first.orders[0]?.quantity).toBe("0.03");
  });

  test("an invalid user_id is INVALID_ARGUMENT", async () => {
    expect((await rejection(orders.listOrders({ userId: "" }))).violations).toEqual([
      "user_id: is required",
    ]);
    const error = await rejection(orders.listOrders({ userId: "nobody" }));
    expect(error.code).toBe("InvalidArgument");
    expect(error.violations).toEqual(["user_id: must be a UUID"]);
  });

  test("a page token is bound to its user and its listing", async () => {
    const owner = await funded({ USD: "100000" });
    for (let i = 0; i < 2; i++) await orders.placeOrder(buyBtc(owner, "0.01"));
    const { nextPageToken } = await orders.listOrders({ userId: owner, pageSize: 1 });
    expect(nextPageToken).not.toBe("");
    const other = await stack.createUser();
    const foreign = await rejection(orders.listOrders({ userId: other, pageToken: nextPageToken }));
    expect(foreign.code).toBe("InvalidArgument");
    expect(foreign.violations).toEqual(["page_token: is not a token returned by this listing"]);
    // A ListTransactions token of the same user is not a ListOrders token either.
    const transactions = await accounts.listTransactions({ userId: owner, pageSize: 1 });
    const crossed = await rejection(
      orders.listOrders({ userId: owner, pageToken: transactions.nextPageToken }),
    );
    expect(crossed.violations).toEqual(["page_token: is not a token returned by this listing"]);
  });

  test("bad input is INVALID_ARGUMENT, an unknown user NOT_FOUND", async () => {
    const userId = await stack.createUser();
    expect((await orders.listOrders({ userId })).orders).toEqual([]);
    expect((await rejection(orders.listOrders({ userId, pageSize: -5 }))).violations).toEqual([
      "page_size: must not be negative",
    ]);
    expect((await rejection(orders.listOrders({ userId, pageToken: "x.y" }))).code).toBe(
      "InvalidArgument",
    );
    expect(
      (await rejection(orders.listOrders({ userId: "01a20000-0000-7000-8000-000000000007" }))).code,
    ).toBe("NotFound");
  });
});
