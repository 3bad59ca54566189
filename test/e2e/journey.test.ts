import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { promisify } from "node:util";
import { AccountService, TransactionKind } from "@coinmesh/proto/order/v1/account_pb";
import { OrderService, Side } from "@coinmesh/proto/order/v1/order_pb";
import { RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import { type Client, Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
  Http2SessionManager,
} from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mintToken } from "../../gateway/src/token.ts";
import { Decimal } from "../../services/order/src/amounts.ts";
import { type Platform, startPlatform, TEST_JWT_SECRET } from "../support/platform.ts";

// Every service and the gateway as real processes on fresh databases, the real Redis and a
// fake rates upstream; a user's whole journey through the gateway in each protocol.

let platform: Platform;
const sessions: Http2SessionManager[] = [];

beforeAll(async () => {
  platform = await startPlatform({ gateway: true });
}, 120_000);

afterAll(async () => {
  for (const session of sessions) session.abort();
  await platform?.stop();
});

const PROTOCOLS: Record<string, (baseUrl: string) => Transport> = {
  "Connect JSON": (baseUrl) =>
    createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false }),
  "Connect binary": (baseUrl) =>
    createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true }),
  "gRPC-web": (baseUrl) => createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }),
  gRPC: (baseUrl) => {
    const sessionManager = new Http2SessionManager(baseUrl);
    sessions.push(sessionManager);
    return createGrpcTransport({ baseUrl, sessionManager });
  },
};

function clients(protocol: string) {
  const transport = PROTOCOLS[protocol]?.(platform.gateway ?? "") as Transport;
  return {
    users: createClient(UserService, transport),
    accounts: createClient(AccountService, transport),
    orders: createClient(OrderService, transport),
    rates: createClient(RateService, transport),
  };
}

async function signUp(users: Client<typeof UserService>) {
  const { user } = await users.createUser({
    email: `${randomUUID()}@example.com`,
    displayName: "Journey",
  });
  const id = user?.id ?? "";
  const token = await mintToken({ sub: id, secret: TEST_JWT_SECRET });
  return { id, headers: { authorization: `Bearer ${token}` } };
}

describe.each(Object.keys(PROTOCOLS))("the journey over %s", (protocol) => {
  it("signs up, deposits, watches rates, buys, sells, transfers and lists", async () => {
    const { users, accounts, orders, rates } = clients(protocol);
    const me = await signUp(users);
    const friend = await signUp(users);
    const as = (who: { headers: Record<string, string> }) => ({ headers: who.headers });

    await accounts.deposit(
      { userId: me.id, currency: "USD", amount: "10000", idempotencyKey: randomUUID() },
      as(me),
    );

    const watch = new AbortController();
    let price = "";
    for await (const update of rates.watchRates(
      { base: "BTC", quotes: ["USD"] },
      { signal: watch.signal },
    )) {
      price = update.rates[0]?.price ?? "";
      break;
    }
    watch.abort();
    expect(Number(price)).toBeGreaterThan(0);

    const order = (side: Side, quantity: string) =>
      orders.placeOrder(
        {
          userId: me.id,
          side,
          asset: "BTC",
          quoteCurrency: "USD",
          quantity,
          idempotencyKey: randomUUID(),
        },
        as(me),
      );
    const bought = (await order(Side.BUY, "0.01")).order;
    const sold = (await order(Side.SELL, "0.004")).order;
    expect(bought?.price).toBe(price);

    await accounts.transfer(
      {
        fromUserId: me.id,
        toUserId: friend.id,
        currency: "USD",
        amount: "100",
        idempotencyKey: randomUUID(),
      },
      as(me),
    );

    const { balances } = await accounts.getBalances({ userId: me.id }, as(me));
    const usd = new Decimal("10000")
      .minus(bought?.notional ?? "NaN")
      .plus(sold?.notional ?? "NaN")
      .minus("100");
    expect(
      Object.fromEntries(balances.map((b) => [b.currency, new Decimal(b.amount).toString()])),
    ).toEqual({
      BTC: "0.006",
      USD: usd.toString(),
    });
    const friendBalances = await accounts.getBalances({ userId: friend.id }, as(friend));
    expect(
      friendBalances.balances.map((b) => [b.currency, new Decimal(b.amount).toString()]),
    ).toEqual([["USD", "100"]]);

    const listed = await orders.listOrders({ userId: me.id }, as(me));
    expect(listed.orders.map((o) => o.id)).toEqual([sold?.id, bought?.id]);
    const history = await accounts.listTransactions({ userId: me.id }, as(me));
    expect(history.transactions.map((t) => t.kind)).toEqual([
      TransactionKind.TRANSFER,
      TransactionKind.TRADE,
      TransactionKind.TRADE,
      TransactionKind.DEPOSIT,
    ]);

    // My order is nobody else's business, and an anonymous caller gets nothing.
    const denied = await orders.getOrder({ id: bought?.id ?? "" }, as(friend)).catch((e) => e);
    expect(ConnectError.from(denied).code).toBe(Code.NotFound);
    const anonymous = await accounts.getBalances({ userId: me.id }).catch((e) => e);
    expect(ConnectError.from(anonymous).code).toBe(Code.Unauthenticated);
  });
});

describe("the README's curl examples", () => {
  const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
  const section = readme.slice(readme.indexOf("### Connect JSON with curl"));
  const examples = [
    ...section.slice(0, section.indexOf("\n### ", 1)).matchAll(/```sh\n([\s\S]*?)```/g),
  ]
    .map((m) => m[1]?.trim() ?? "")
    .filter((cmd) => cmd.startsWith("curl"));

  it("has examples to run", () => {
    expect(examples.length).toBeGreaterThanOrEqual(2);
  });

  it.each(examples.map((cmd) => [cmd.split("\n")[0], cmd] as const))(
    "runs `%s` against the gateway",
    async (_first, cmd) => {
      const command = cmd.replaceAll("http://127.0.0.1:8080", platform.gateway ?? "");
      const { stdout } = await promisify(execFile)("sh", ["-c", command], { timeout: 10_000 });
      const body = JSON.parse(stdout) as { rate: { base: string; quote: string; price: string } };
      expect(body.rate).toMatchObject({ base: "BTC", quote: "USD" });
      expect(Number(body.rate.price)).toBeGreaterThan(0);
    },
  );

  it("walks the README's curl journey: every call answers, and the balances add up", async () => {
    const journey = readme.slice(readme.indexOf("### The journey with curl"));
    const script = /```sh\n([\s\S]*?)```/.exec(journey)?.[1] ?? "";
    const tag = randomUUID();
    const command = script
      .replace("GW=http://127.0.0.1:8080", `GW=${platform.gateway}`)
      .replaceAll("@example.com", `-${tag}@example.com`);
    const { stdout } = await promisify(execFile)("sh", ["-ec", command], {
      cwd: new URL("../..", import.meta.url).pathname,
      env: { ...process.env, JWT_SECRET: TEST_JWT_SECRET },
      timeout: 30_000,
    });
    const [deposit, buy, sell, transfer, orders, history, balances] = stdout
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    expect(deposit.transaction.kind).toBe("TRANSACTION_KIND_DEPOSIT");
    expect(buy.order).toMatchObject({ side: "SIDE_BUY", status: "ORDER_STATUS_FILLED" });
    expect(sell.order).toMatchObject({ side: "SIDE_SELL", status: "ORDER_STATUS_FILLED" });
    expect(transfer.transaction.kind).toBe("TRANSACTION_KIND_TRANSFER");
    expect(orders.orders.map((o: { id: string }) => o.id)).toEqual([sell.order.id, buy.order.id]);
    expect(history.transactions).toHaveLength(4);
    const usd = new Decimal(1000).minus(buy.order.notional).plus(sell.order.notional).minus(100);
    expect(balances.balances).toEqual([
      { currency: "BTC", amount: "0.001" },
      { currency: "USD", amount: usd.toString() },
    ]);
  });
});
