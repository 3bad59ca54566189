import { randomUUID } from "node:crypto";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { AppError } from "@coinmesh/lib/errors";
import { createServiceClient } from "@coinmesh/lib/grpc-client";
import { serve } from "@coinmesh/lib/grpc-server";
import type { ServiceHandlers } from "@coinmesh/lib/grpc-service";
import { silentLogger } from "@coinmesh/lib/log";
import { createPool } from "@coinmesh/lib/postgres";
import { createTestDatabase, startTestServer, type TestDatabase } from "@coinmesh/lib/testing";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  PreconditionFailureSchema,
} from "@coinmesh/proto/google/rpc/error_details_pb";
import { AccountService } from "@coinmesh/proto/order/v1/account_pb";
import { CurrencyType, RateService, RateSource } from "@coinmesh/proto/rate/v1/rate_pb";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import { Code, ConnectError } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import { userHandlers } from "../../user/src/server.ts";
import { createUsers } from "../../user/src/users.ts";
import { createUsersRepository } from "../../user/src/users-repository.ts";
import { Decimal } from "../src/amounts.ts";
import { createApp } from "../src/app.ts";
import { type LedgerMetrics, noLedgerMetrics } from "../src/ledger-metrics.ts";

export const ORDER_MIGRATIONS = new URL("../migrations", import.meta.url).pathname;
const USER_MIGRATIONS = new URL("../../user/migrations", import.meta.url).pathname;

/** The real user service (services/user) on its own test database, on 127.0.0.1:0. */
export async function startUserService() {
  const db = await createTestDatabase(USER_MIGRATIONS);
  const users = createUsers({
    repo: createUsersRepository(db.pool),
    clock: () => new Date(),
    newId: uuidv7,
  });
  const server = await startTestServer([serve(UserService, userHandlers(users))]);
  const client = server.grpcClient(UserService);
  return {
    address: server.address,
    async createUser(): Promise<string> {
      const { user } = await client.createUser({
        email: `${randomUUID()}@example.com`,
        displayName: "Test User",
      });
      if (!user) throw new Error("CreateUser returned no user");
      return user.id;
    },
    async stop() {
      await server.stop();
      await db.drop();
    },
  };
}

/** A rate service whose answers each test controls through `state`. */
export function createRateFake() {
  const state = {
    currencies: ["BTC", "ETH", "EUR", "USD", "XAU"],
    prices: new Map<string, string>([
      ["BTC/USD", "64000.5"],
      ["ETH/USD", "3000.333333333333333333"],
      ["BTC/EUR", "59000"],
      ["XAU/USD", "2400.1"],
    ]),
    source: RateSource.CACHE as RateSource,
    /** The `as_of` GetRate answers with; unset means a second before the call. */
    asOf: undefined as Date | undefined,
    /** Thrown by GetRate when set as the call arrives. */
    rateFailure: undefined as AppError | undefined,
    /** Thrown by ListCurrencies when set. */
    listFailure: undefined as AppError | undefined,
    /** Milliseconds GetRate waits before answering. */
    delayMs: 0,
    /** Called as a GetRate call arrives; the call answers once the promise it returns settles. */
    hold: undefined as (() => Promise<void>) | undefined,
    getRateCalls: 0,
    /** The deadline GetRate last saw, in epoch ms. */
    lastDeadline: undefined as number | undefined,
  };
  const handlers: ServiceHandlers<typeof RateService> = {
    async listCurrencies() {
      if (state.listFailure) throw state.listFailure;
      return {
        currencies: state.currencies.map((code) => ({
          code,
          name: code,
          unit: code,
          type: CurrencyType.FIAT,
        })),
      };
    },
    async getRate(req, ctx) {
      state.getRateCalls++;
      state.lastDeadline = ctx.deadline;
      const failure = state.rateFailure;
      await state.hold?.();
      if (state.delayMs > 0) {
        await new Promise((resolve) => setTimeout(resolve, state.delayMs));
        if (ctx.signal.aborted) throw ctx.signal.reason;
      }
      if (failure) throw failure;
      const price = state.prices.get(`${req.base}/${req.quote}`);
      if (price === undefined) throw new AppError("not_found", `no rate ${req.base}/${req.quote}`);
      return {
        rate: {
          base: req.base,
          quote: req.quote,
          price,
          source: state.source,
          asOf: timestampFromDate(state.asOf ?? new Date(Date.now() - 1_000)),
          stale: state.source === RateSource.SNAPSHOT,
        },
      };
    },
    async getRates() {
      throw new AppError("internal", "not used by the order service");
    },
    async *watchRates() {},
  };
  return { state, registration: serve(RateService, handlers) };
}

export interface OrderServiceOptions {
  db: TestDatabase;
  userAddress: string;
  rateAddress: string;
  maxAmount?: string;
  upstreamTimeoutMs?: number;
  maxRateAgeMs?: number;
  allowSnapshotRates?: boolean;
  metrics?: LedgerMetrics;
}

/** The order service under test on 127.0.0.1:0, calling real user and rate servers. */
export async function startOrderService(options: OrderServiceOptions) {
  const timeoutMs = options.upstreamTimeoutMs ?? 2_000;
  const users = createServiceClient(UserService, options.userAddress, {
    defaultTimeoutMs: timeoutMs,
  });
  const rates = createServiceClient(RateService, options.rateAddress, {
    defaultTimeoutMs: timeoutMs,
  });
  // As main.ts opens it: pipelining on a real Postgres only.
  const pool = createPool(options.db.url, silentLogger(), { max: 20, pipeline: options.db.real });
  const app = createApp({
    pool,
    preparedStatements: options.db.real,
    userService: users.client,
    rateService: rates.client,
    config: {
      maxAmount: new Decimal(options.maxAmount ?? "1000000000000"),
      upstreamTimeoutMs: timeoutMs,
      currencyCacheMs: 60_000,
      userCacheSize: 1_000,
      maxRateAgeMs: options.maxRateAgeMs ?? 120_000,
      allowSnapshotRates: options.allowSnapshotRates ?? false,
    },
    metrics: options.metrics ?? noLedgerMetrics,
    log: silentLogger(),
    clock: () => new Date(),
    newId: uuidv7,
  });
  const server = await startTestServer(app.services);
  return {
    ...server,
    app,
    async stop() {
      await server.stop();
      users.close();
      rates.close();
      await pool.end();
    },
  };
}

/** Everything a server test needs: the order service, the real user service and a rate fake. */
export async function startStack(options: Partial<OrderServiceOptions> = {}) {
  const db = await createTestDatabase(ORDER_MIGRATIONS);
  const userService = await startUserService();
  const rate = createRateFake();
  const rateServer = await startTestServer([rate.registration]);
  const order = await startOrderService({
    db,
    userAddress: userService.address,
    rateAddress: rateServer.address,
    ...options,
  });
  const accounts = order.connectClient(AccountService);
  let deposits = 0;
  return {
    db,
    rate: rate.state,
    order,
    createUser: userService.createUser,
    /** A new user holding these amounts. */
    async funded(amounts: Record<string, string>): Promise<string> {
      const userId = await userService.createUser();
      for (const [currency, amount] of Object.entries(amounts)) {
        const idempotencyKey = `funding-${++deposits}`;
        await accounts.deposit({ userId, currency, amount, idempotencyKey });
      }
      return userId;
    },
    /** A user's balances as { currency: amount }. */
    async balancesOf(userId: string): Promise<Record<string, string>> {
      const { balances } = await accounts.getBalances({ userId });
      return Object.fromEntries(balances.map((b) => [b.currency, b.amount]));
    },
    async stop() {
      await order.stop();
      await Promise.all([rateServer.stop(), userService.stop(), db.drop()]);
    },
  };
}

/** The error a call failed with, with its google.rpc details decoded; fails if the call succeeded. */
export async function rejection(call: Promise<unknown>) {
  try {
    await call;
  } catch (err) {
    const error = ConnectError.from(err);
    return {
      code: Code[error.code],
      message: error.rawMessage,
      /** "field: description" per BadRequest field violation. */
      violations: error
        .findDetails(BadRequestSchema)
        .flatMap((d) => d.fieldViolations.map((v) => `${v.field}: ${v.description}`)),
      info: error.findDetails(ErrorInfoSchema)[0],
      preconditions: error.findDetails(PreconditionFailureSchema).flatMap((d) => d.violations),
    };
  }
  throw new Error("expected the call to fail");
}
