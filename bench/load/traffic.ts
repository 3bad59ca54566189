// The mix `npm run load` sends through the gateway: sign-ups, deposits, orders, rate reads and
// rate streams, spread over the four protocols the gateway serves, as the users it created.
import { randomUUID } from "node:crypto";
import type { DescService } from "@bufbuild/protobuf";
import { AccountService } from "@coinmesh/proto/order/v1/account_pb";
import { OrderService, Side } from "@coinmesh/proto/order/v1/order_pb";
import { RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import { type Client, Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { mintToken } from "../../gateway/src/token.ts";
import { LIMITS } from "./limits.ts";

export interface TokenSettings {
  secret: string;
  issuer?: string;
  audience?: string;
}

export const LOAD_PROTOCOLS = ["connect-json", "connect-proto", "grpc-web", "grpc"] as const;
export type LoadProtocol = (typeof LOAD_PROTOCOLS)[number];

interface Clients {
  user: Client<typeof UserService>;
  account: Client<typeof AccountService>;
  order: Client<typeof OrderService>;
  rate: Client<typeof RateService>;
}

/** Connect JSON and gRPC-web over HTTP/1.1, Connect binary and gRPC over HTTP/2. */
function transportFor(protocol: LoadProtocol, baseUrl: string): Transport {
  switch (protocol) {
    case "connect-json":
      return createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false });
    case "connect-proto":
      return createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true });
    case "grpc-web":
      return createGrpcWebTransport({ baseUrl, httpVersion: "1.1" });
    case "grpc":
      return createGrpcTransport({ baseUrl });
  }
}

function clientsFor(transport: Transport): Clients {
  const make = <S extends DescService>(service: S) => createClient(service, transport);
  return {
    user: make(UserService),
    account: make(AccountService),
    order: make(OrderService),
    rate: make(RateService),
  };
}

/** The canonical upper-case name of a Connect code, as gRPC spells it: NOT_FOUND, ... */
export function codeName(err: unknown): string {
  const code = err instanceof ConnectError ? err.code : Code.Unknown;
  return (Code[code] ?? "Unknown").replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

interface SimulatedUser {
  id: string;
  headers: { authorization: string };
  funded: boolean;
}

const PAIRS = [
  ["BTC", "USD"],
  ["ETH", "EUR"],
  ["BTC", "XAU"],
  ["ETH", "USD"],
] as const;

export interface Traffic {
  /** Picks and runs one action; resolves with the RPC's name once it has finished. */
  next(): { rpc: string; done: Promise<void> };
  streams(): number;
  close(): void;
}

export function createTraffic(baseUrl: string, tokens: TokenSettings, timeoutMs = 10_000): Traffic {
  const byProtocol = LOAD_PROTOCOLS.map((p) => clientsFor(transportFor(p, baseUrl)));
  const users: SimulatedUser[] = [];
  const funded: SimulatedUser[] = [];
  const watchers = new Set<AbortController>();
  let turn = 0;
  const clients = () => byProtocol[turn++ % byProtocol.length] as Clients;
  const anyUser = (mustBeFunded: boolean) => {
    const pool = mustBeFunded ? funded : users;
    return pool[Math.floor(Math.random() * pool.length)];
  };
  const options = (user?: SimulatedUser) => ({ timeoutMs, headers: user?.headers });

  async function signUp(c: Clients) {
    const { user } = await c.user.createUser(
      { email: `load-${randomUUID()}@example.com`, displayName: "Load" },
      options(),
    );
    const id = user?.id ?? "";
    users.push({
      id,
      headers: { authorization: `Bearer ${await mintToken({ ...tokens, sub: id })}` },
      funded: false,
    });
  }

  async function deposit(c: Clients, user: SimulatedUser) {
    await c.account.deposit(
      { userId: user.id, currency: "USD", amount: "1000", idempotencyKey: randomUUID() },
      options(user),
    );
    if (!user.funded) funded.push(user);
    user.funded = true;
  }

  const placeOrder = (c: Clients, user: SimulatedUser) =>
    c.order.placeOrder(
      {
        userId: user.id,
        side: Side.BUY,
        asset: "BTC",
        quoteCurrency: "USD",
        quantity: "0.0001",
        idempotencyKey: randomUUID(),
      },
      options(user),
    );

  /** Holds a WatchRates stream open for 5–15 s, reading every update. */
  async function watch(c: Clients) {
    const controller = new AbortController();
    watchers.add(controller);
    const timer = setTimeout(() => controller.abort(), 5_000 + Math.random() * 10_000);
    try {
      const [base, quote] = PAIRS[Math.floor(Math.random() * PAIRS.length)] ?? PAIRS[0];
      for await (const _ of c.rate.watchRates(
        { base, quotes: [quote] },
        { signal: controller.signal },
      )) {
        // Each update is read and dropped; the stream's end is what is counted.
      }
    } catch (err) {
      if (!controller.signal.aborted) throw err;
    } finally {
      clearTimeout(timer);
      watchers.delete(controller);
    }
  }

  const readRate = (c: Clients) => {
    const [base, quote] = PAIRS[Math.floor(Math.random() * PAIRS.length)] ?? PAIRS[0];
    return c.rate.getRate({ base, quote }, options());
  };

  type Action = (c: Clients) => [rpc: string, call: Promise<unknown>] | undefined;
  const as =
    (rpc: string, call: (c: Clients) => Promise<unknown>): Action =>
    (c) => [rpc, call(c)];
  /** Runs act for a random user (a funded one if asked); undefined while there is none. */
  const forUser =
    (
      rpc: string,
      funded: boolean,
      act: (c: Clients, u: SimulatedUser) => Promise<unknown>,
    ): Action =>
    (c) => {
      const user = anyUser(funded);
      return user ? [rpc, act(c, user)] : undefined;
    };
  /** Weighted actions; those that need a user sign one up instead until there is one. */
  const mix: [number, Action][] = [
    [5, as("UserService/CreateUser", signUp)],
    [12, forUser("AccountService/Deposit", false, deposit)],
    [12, forUser("OrderService/PlaceOrder", true, placeOrder)],
    [35, as("RateService/GetRate", readRate)],
    [
      10,
      as("RateService/GetRates", (c) =>
        c.rate.getRates({ base: "BTC", quotes: ["USD", "EUR", "XAU"] }, options()),
      ),
    ],
    [
      8,
      forUser("AccountService/GetBalances", false, (c, u) =>
        c.account.getBalances({ userId: u.id }, options(u)),
      ),
    ],
    [
      6,
      forUser("OrderService/ListOrders", false, (c, u) =>
        c.order.listOrders({ userId: u.id, pageSize: 10 }, options(u)),
      ),
    ],
    [2, as("RateService/ListCurrencies", (c) => c.rate.listCurrencies({}, options()))],
    [
      10,
      (c) =>
        watchers.size < LIMITS.maxStreams
          ? ["RateService/WatchRates", watch(c)]
          : ["RateService/GetRate", readRate(c)],
    ],
  ];
  const totalWeight = mix.reduce((n, [w]) => n + w, 0);

  return {
    next() {
      const c = clients();
      let pick = Math.random() * totalWeight;
      let act = (mix[0] as [number, Action])[1];
      for (const [weight, candidate] of mix) {
        act = candidate;
        pick -= weight;
        if (pick <= 0) break;
      }
      const [rpc, call] = act(c) ?? ["UserService/CreateUser", signUp(c)];
      return { rpc, done: call.then(() => undefined) };
    },
    streams: () => watchers.size,
    close() {
      for (const w of watchers) w.abort();
    },
  };
}
