import { randomUUID } from "node:crypto";
import type { DescMethod } from "@bufbuild/protobuf";
import { AccountService } from "@coinmesh/proto/order/v1/account_pb";
import { OrderService, Side } from "@coinmesh/proto/order/v1/order_pb";
import { RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { accessTable, PUBLIC_SERVICES } from "../src/authorization.ts";
import {
  type Backends,
  bearer,
  outcome,
  type Protocol,
  signUp,
  startBackends,
  startTestGateway,
  TEST_SECRET,
  type TestGateway,
  token,
} from "./harness.ts";

type Identity =
  | "anonymous"
  | "other user"
  | "owner"
  | "admin"
  | "expired token"
  | "bad signature"
  | "wrong audience";
const IDENTITIES: Identity[] = [
  "anonymous",
  "other user",
  "owner",
  "admin",
  "expired token",
  "bad signature",
  "wrong audience",
];

interface Fixture {
  owner: string;
  other: string;
  orderId: string;
}

interface Row {
  method: DescMethod;
  call: (
    clients: Clients,
    f: Fixture,
    headers: Record<string, string>,
  ) => Promise<unknown> | AsyncIterable<unknown>;
  /** Expected outcome for anonymous, another user, the owner and an admin, in that order. */
  expect: [string, string, string, string];
}

type Clients = ReturnType<typeof clientsOf>;
const clientsOf = (gateway: TestGateway, protocol: Protocol) => ({
  users: gateway.client(UserService, protocol),
  accounts: gateway.client(AccountService, protocol),
  orders: gateway.client(OrderService, protocol),
  rates: gateway.client(RateService, protocol),
});
const key = () => randomUUID();
const usd = (amount: string) => ({ currency: "USD", amount });

// Every public RPC against the owner's resources. Admins read everything and list users, but
// write only their own; another user's resource is NOT_FOUND to read, PERMISSION_DENIED to write.
const TABLE: Row[] = [
  {
    method: UserService.method.createUser,
    call: (c, _f, headers) =>
      c.users.createUser({ email: `${key()}@example.com`, displayName: "New" }, { headers }),
    expect: ["OK", "OK", "OK", "OK"],
  },
  {
    method: UserService.method.getUser,
    call: (c, f, headers) => c.users.getUser({ id: f.owner }, { headers }),
    expect: ["Unauthenticated", "NotFound", "OK", "OK"],
  },
  {
    method: UserService.method.listUsers,
    call: (c, _f, headers) => c.users.listUsers({ pageSize: 1 }, { headers }),
    expect: ["Unauthenticated", "PermissionDenied", "PermissionDenied", "OK"],
  },
  {
    method: UserService.method.updateUser,
    call: (c, f, headers) =>
      c.users.updateUser(
        { user: { id: f.owner, displayName: "Renamed" }, updateMask: { paths: ["display_name"] } },
        { headers },
      ),
    expect: ["Unauthenticated", "PermissionDenied", "OK", "PermissionDenied"],
  },
  {
    method: AccountService.method.deposit,
    call: (c, f, headers) =>
      c.accounts.deposit({ userId: f.owner, ...usd("10"), idempotencyKey: key() }, { headers }),
    expect: ["Unauthenticated", "PermissionDenied", "OK", "PermissionDenied"],
  },
  {
    method: AccountService.method.withdraw,
    call: (c, f, headers) =>
      c.accounts.withdraw({ userId: f.owner, ...usd("1"), idempotencyKey: key() }, { headers }),
    expect: ["Unauthenticated", "PermissionDenied", "OK", "PermissionDenied"],
  },
  {
    method: AccountService.method.transfer,
    call: (c, f, headers) =>
      c.accounts.transfer(
        { fromUserId: f.owner, toUserId: f.other, ...usd("1"), idempotencyKey: key() },
        { headers },
      ),
    expect: ["Unauthenticated", "PermissionDenied", "OK", "PermissionDenied"],
  },
  {
    method: AccountService.method.getBalances,
    call: (c, f, headers) => c.accounts.getBalances({ userId: f.owner }, { headers }),
    expect: ["Unauthenticated", "NotFound", "OK", "OK"],
  },
  {
    method: AccountService.method.listTransactions,
    call: (c, f, headers) => c.accounts.listTransactions({ userId: f.owner }, { headers }),
    expect: ["Unauthenticated", "NotFound", "OK", "OK"],
  },
  {
    method: OrderService.method.placeOrder,
    call: (c, f, headers) =>
      c.orders.placeOrder(
        {
          userId: f.owner,
          side: Side.BUY,
          asset: "BTC",
          quoteCurrency: "USD",
          quantity: "0.0001",
          idempotencyKey: key(),
        },
        { headers },
      ),
    expect: ["Unauthenticated", "PermissionDenied", "OK", "PermissionDenied"],
  },
  {
    method: OrderService.method.getOrder,
    call: (c, f, headers) => c.orders.getOrder({ id: f.orderId }, { headers }),
    expect: ["Unauthenticated", "NotFound", "OK", "OK"],
  },
  {
    method: OrderService.method.listOrders,
    call: (c, f, headers) => c.orders.listOrders({ userId: f.owner }, { headers }),
    expect: ["Unauthenticated", "NotFound", "OK", "OK"],
  },
  {
    method: RateService.method.listCurrencies,
    call: (c, _f, headers) => c.rates.listCurrencies({}, { headers }),
    expect: ["OK", "OK", "OK", "OK"],
  },
  {
    method: RateService.method.getRate,
    call: (c, _f, headers) => c.rates.getRate({ base: "BTC", quote: "USD" }, { headers }),
    expect: ["OK", "OK", "OK", "OK"],
  },
  {
    method: RateService.method.getRates,
    call: (c, _f, headers) => c.rates.getRates({ base: "BTC", quotes: ["USD"] }, { headers }),
    expect: ["OK", "OK", "OK", "OK"],
  },
  {
    method: RateService.method.watchRates,
    call: (c, _f, headers) => c.rates.watchRates({ base: "BTC", quotes: ["USD"] }, { headers }),
    expect: ["OK", "OK", "OK", "OK"],
  },
];

let backends: Backends;
let gateway: TestGateway;
let fixture: Fixture;
const headersOf = {} as Record<Identity, Record<string, string>>;

beforeAll(async () => {
  backends = await startBackends();
  gateway = await startTestGateway(backends.addresses);
  const owner = await signUp(gateway);
  const other = await signUp(gateway);
  const admin = await signUp(gateway, { admin: true });
  const { accounts, orders } = clientsOf(gateway, "connect-binary-h1");
  await accounts.deposit(
    { userId: owner.id, ...usd("100000"), idempotencyKey: key() },
    { headers: owner.headers },
  );
  const { order } = await orders.placeOrder(
    {
      userId: owner.id,
      side: Side.BUY,
      asset: "BTC",
      quoteCurrency: "USD",
      quantity: "0.001",
      idempotencyKey: key(),
    },
    { headers: owner.headers },
  );
  fixture = { owner: owner.id, other: other.id, orderId: order?.id ?? "" };
  Object.assign(headersOf, {
    anonymous: {},
    "other user": other.headers,
    owner: owner.headers,
    admin: admin.headers,
    "expired token": bearer(await token(owner.id, { ttl: -120 })),
    "bad signature": bearer(await token(owner.id, { secret: `${TEST_SECRET.slice(1)}x` })),
    "wrong audience": bearer(await token(owner.id, { audience: "someone-else" })),
  });
});

afterAll(async () => {
  await gateway?.stop();
  await backends?.stop();
});

it("has one line for every RPC of the public services, and the table covers them all", () => {
  const rpcs = PUBLIC_SERVICES.flatMap((s) => s.methods);
  expect(new Set(accessTable.keys())).toEqual(new Set(rpcs));
  expect(new Set(TABLE.map((r) => r.method))).toEqual(new Set(rpcs));
});

// The Connect path (connect-node) and the gRPC fast path authorize with the same table.
describe.each(["connect-binary-h1", "grpc"] as Protocol[])("over %s", (protocol) => {
  it.each(TABLE.map((row) => [`${row.method.parent.name}.${row.method.name}`, row] as const))(
    "%s: each identity gets what the table says",
    async (_name, row) => {
      const clients = clientsOf(gateway, protocol);
      const got: Record<string, string> = {};
      for (const identity of IDENTITIES) {
        got[identity] = await outcome(row.call(clients, fixture, headersOf[identity]));
      }
      expect(got).toEqual({
        anonymous: row.expect[0],
        "other user": row.expect[1],
        owner: row.expect[2],
        admin: row.expect[3],
        "expired token": "Unauthenticated",
        "bad signature": "Unauthenticated",
        "wrong audience": "Unauthenticated",
      });
    },
  );
});

it("answers another user's order exactly like an order that does not exist", async () => {
  const { orders } = clientsOf(gateway, "connect-json-h1");
  const other = { headers: headersOf["other user"] };
  const foreign = await orders.getOrder({ id: fixture.orderId }, other).catch((e) => e);
  const missing = await orders.getOrder({ id: randomUUID() }, other).catch((e) => e);
  expect(foreign.code).toBe(missing.code);
  expect(foreign.rawMessage.replace(fixture.orderId, "ID")).toBe(
    missing.rawMessage.replace(/[0-9a-f-]{36}/, "ID"),
  );
  expect(foreign.details).toEqual(missing.details);
});

it("counts refused tokens by reason", async () => {
  expect(
    await gateway.metric("coinmesh_gateway_auth_failures_total", { reason: "expired" }),
  ).toBeGreaterThan(0);
  expect(
    await gateway.metric("coinmesh_gateway_auth_failures_total", { reason: "bad_signature" }),
  ).toBeGreaterThan(0);
  expect(
    await gateway.metric("coinmesh_gateway_auth_failures_total", { reason: "wrong_audience" }),
  ).toBeGreaterThan(0);
  expect(
    await gateway.metric("coinmesh_gateway_auth_failures_total", { reason: "missing" }),
  ).toBeGreaterThan(0);
  expect(
    await gateway.metric("grpc_server_handled_total", {
      grpc_method: "GetUser",
      grpc_code: "UNAUTHENTICATED",
    }),
  ).toBeGreaterThan(0);
});
