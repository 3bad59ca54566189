import type { ServiceClient } from "@coinmesh/lib/grpc-client";
import { serve } from "@coinmesh/lib/grpc-server";
import type { Logger } from "@coinmesh/lib/log";
import type { Pool } from "@coinmesh/lib/postgres";
import { AccountService } from "@coinmesh/proto/order/v1/account_pb";
import { OrderService } from "@coinmesh/proto/order/v1/order_pb";
import type { RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import type { UserService } from "@coinmesh/proto/user/v1/user_pb";
import type { OrderConfig } from "./config.ts";
import { createCurrencyCatalog } from "./currencies.ts";
import { createJournalRepository } from "./journal-repository.ts";
import { createLedger } from "./ledger.ts";
import type { LedgerMetrics } from "./ledger-metrics.ts";
import { createLedgerRepository } from "./ledger-repository.ts";
import { createOrders } from "./orders.ts";
import { createOrdersRepository } from "./orders-repository.ts";
import { createRateQuotes } from "./rates.ts";
import { accountHandlers, orderHandlers } from "./server.ts";
import { createUsersDirectory } from "./users-directory.ts";
import { createWriteOnce } from "./write-once.ts";

export interface AppDeps {
  pool: Pool;
  /** False on the embedded database (see JournalRepositoryOptions). */
  preparedStatements: boolean;
  userService: Pick<ServiceClient<typeof UserService>, "getUser">;
  rateService: Pick<ServiceClient<typeof RateService>, "getRate" | "listCurrencies">;
  config: Pick<
    OrderConfig,
    | "maxAmount"
    | "upstreamTimeoutMs"
    | "currencyCacheMs"
    | "userCacheSize"
    | "maxRateAgeMs"
    | "allowSnapshotRates"
  >;
  metrics: LedgerMetrics;
  log: Logger;
  clock: () => Date;
  newId: () => string;
}

/** The domain wired to its storage and dependencies; main.ts and the server tests share it. */
export function createApp(deps: AppDeps) {
  const { config, pool } = deps;
  const timeoutMs = config.upstreamTimeoutMs;
  const journal = createJournalRepository(pool, { preparedStatements: deps.preparedStatements });
  const shared = {
    // Shared by the ledger and the orders: a key is the user's, whichever RPC uses it.
    writeOnce: createWriteOnce(journal),
    users: createUsersDirectory({
      client: deps.userService,
      timeoutMs,
      maxEntries: config.userCacheSize,
    }),
    currencies: createCurrencyCatalog({
      client: deps.rateService,
      timeoutMs,
      ttlMs: config.currencyCacheMs,
      clock: () => deps.clock().getTime(),
      log: deps.log,
    }),
    metrics: deps.metrics,
    clock: deps.clock,
    newId: deps.newId,
    maxAmount: config.maxAmount,
  };
  const ledger = createLedger({ ...shared, reads: createLedgerRepository(pool) });
  const orders = createOrders({
    ...shared,
    reads: createOrdersRepository(pool),
    rates: createRateQuotes({
      client: deps.rateService,
      timeoutMs,
      maxAgeMs: config.maxRateAgeMs,
      allowSnapshot: config.allowSnapshotRates,
      clock: deps.clock,
    }),
  });
  return {
    journal,
    ledger,
    orders,
    services: [
      serve(AccountService, accountHandlers(ledger)),
      serve(OrderService, orderHandlers(orders)),
    ],
  };
}
