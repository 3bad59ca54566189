import { createTestDatabase } from "@coinmesh/lib/testing";
import { OrderService, OrderStatus, Side } from "@coinmesh/proto/order/v1/order_pb";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createFundedUsers } from "../harness/accounts.ts";
import { driveLoad } from "../harness/drive.ts";
import { psqlFile, runPgbench } from "../harness/pgbench.ts";
import { migrationsOf } from "../harness/platform.ts";
import { check, median, pairedRatio, repeated } from "../harness/results.ts";
import {
  type BenchContext,
  meter,
  origin,
  type Scenario,
  withServerCodes,
} from "../harness/scenario.ts";
import { clientCallTotals } from "../harness/server-codes.ts";
import { encodeRequest } from "../harness/wire.ts";

const benchDir = new URL("..", import.meta.url).pathname;
/** Written by the order service's authors: exactly PlaceOrder's transaction, and its data. */
const SETUP_SQL = `${benchDir}sql/setup.sql`;
const PLACE_ORDER_SQL = `${benchDir}sql/place-order.sql`;

/** Same concurrency for both sides: 16 transactions (pgbench clients) or calls in flight. */
const CONCURRENCY = 16;
const USERS = 200;
/** Replaced per request by the generator, so every order has its own idempotency key. */
const KEY_TOKEN = "KKKKKKKKKKKKKKKKKKKKKKKK";

export const placeOrderScenario: Scenario = {
  name: "place-order",
  title: "PlaceOrder direct against pgbench running PlaceOrder's SQL transaction",
  expectedS: 60,
  async run(ctx: BenchContext) {
    const { platform } = ctx;
    const order = await platform.order();
    const [user, rate] = await Promise.all([platform.user(), platform.rate()]);
    const done = ctx.progress.step(`creating and funding ${USERS} users`);
    const userIds = await createFundedUsers(user.address, order.address, USERS).finally(done);

    const client = createClient(
      OrderService,
      createGrpcTransport({ baseUrl: `http://${order.address}` }),
    );
    const ticket = { side: Side.BUY, asset: "BTC", quoteCurrency: "USD", quantity: "0.001" };
    const sample = await client.placeOrder({
      ...ticket,
      userId: userIds[0] as string,
      idempotencyKey: "bench-sample",
    });
    if (sample.order?.status !== OrderStatus.FILLED) throw new Error("sample order not filled");
    const requests = userIds.map((userId) =>
      encodeRequest("grpc", OrderService.method.placeOrder, {
        ...ticket,
        userId,
        idempotencyKey: KEY_TOKEN,
      }),
    );

    // pgbench gets a database of its own: setup.sql empties the order tables it runs on.
    const pgDb = await createTestDatabase(migrationsOf("order"));
    const pgbenchRuns = [];
    const orderRuns = [];
    const callsBefore = await clientCallTotals(order.metricsPort);
    try {
      await psqlFile(pgDb.url, SETUP_SQL);
      for (let i = 0; i < ctx.repetitions; i++) {
        const stepDone = ctx.progress.step(
          "pgbench place-order.sql",
          (ctx.warmupS + ctx.durationS) * 1000,
        );
        pgbenchRuns.push(
          await runPgbench({
            url: pgDb.url,
            script: PLACE_ORDER_SQL,
            clients: CONCURRENCY,
            threads: 2,
            warmupS: ctx.warmupS,
            durationS: ctx.durationS,
            processes: {},
          }).finally(stepDone),
        );
        const orderDone = ctx.progress.step(
          "PlaceOrder: closed loop",
          (ctx.warmupS + ctx.durationS) * 1000,
        );
        orderRuns.push(
          await withServerCodes(order, "PlaceOrder", () =>
            driveLoad({
              mode: "closed",
              origin: origin(order),
              requests,
              uniqueToken: KEY_TOKEN,
              concurrency: CONCURRENCY,
              workers: 1,
              warmupMs: ctx.warmupS * 1000,
              durationMs: ctx.durationS * 1000,
              processes: meter(order, user, rate),
            }),
          ).finally(orderDone),
        );
      }
    } finally {
      await pgDb.drop();
    }
    const callsAfter = await clientCallTotals(order.metricsPort);
    const outbound = Object.entries(callsAfter)
      .map(([method, after]) => {
        const count = after.count - (callsBefore[method]?.count ?? 0);
        const seconds = after.seconds - (callsBefore[method]?.seconds ?? 0);
        return count > 0
          ? `${method} ${count} calls, mean ${((seconds / count) * 1000).toFixed(1)} ms`
          : "";
      })
      .filter(Boolean);
    const ratio = pairedRatio(
      orderRuns.map((r) => r.throughput),
      pgbenchRuns.map((r) => r.throughput),
    );
    const orderRps = median(orderRuns.map((r) => r.throughput));
    const pgbenchTps = median(pgbenchRuns.map((r) => r.throughput));
    return {
      runs: [
        repeated(`pgbench place-order.sql, ${CONCURRENCY} clients (reference)`, pgbenchRuns),
        repeated(`PlaceOrder direct, ${CONCURRENCY} in flight`, orderRuns),
      ],
      targets: [
        check(
          "PlaceOrder, direct: ≥ 50% of pgbench's throughput on the same SQL",
          `${Math.round(orderRps)} orders/s vs pgbench ${Math.round(pgbenchTps)} tx/s`,
          ratio,
          ">=",
          0.5,
          "see the PlaceOrder notes",
        ),
      ],
      notes: [
        `Market buys of 0.001 BTC for USD spread over ${USERS} funded users, each with its own idempotency key; pgbench runs bench/sql/place-order.sql (1,000 users from bench/sql/setup.sql) with -M prepared, -c ${CONCURRENCY} -j 2 on a database of its own on the same Postgres.`,
        "The service also checks the user (cached) and quotes the price from the rate service (a gRPC call per order); their CPU is in the table.",
        `The order service's own calls to other services during the PlaceOrder runs (its grpc_client_handling_seconds): ${outbound.join("; ") || "none"}.`,
      ],
    };
  },
};
