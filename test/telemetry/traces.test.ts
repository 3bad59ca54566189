import { randomBytes, randomUUID } from "node:crypto";
import { createServiceClient } from "@coinmesh/lib/grpc-client";
import { OrderService, Side } from "@coinmesh/proto/order/v1/order_pb";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startOtlpReceiver } from "../support/otlp-receiver.ts";
import { type Platform, startPlatform } from "../support/platform.ts";

const SERVER = 2;
const CLIENT = 3;

let receiver: Awaited<ReturnType<typeof startOtlpReceiver>>;
let platform: Platform;

beforeAll(async () => {
  receiver = await startOtlpReceiver();
  platform = await startPlatform({
    env: {
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
      OTEL_TRACES_SAMPLER_ARG: "1",
      OTEL_BSP_SCHEDULE_DELAY: "100",
    },
  });
}, 120_000);

afterAll(async () => {
  await platform?.stop();
  await receiver?.close();
});

function traceparent() {
  const traceId = randomBytes(16).toString("hex");
  const parentId = randomBytes(8).toString("hex");
  return { traceId, parentId, header: `00-${traceId}-${parentId}-01` };
}

describe("tracing", () => {
  it("follows one PlaceOrder through order, user, rate and Postgres as a single trace", async () => {
    const users = createServiceClient(UserService, platform.user);
    const orders = createServiceClient(OrderService, platform.order);
    const { user } = await users.client.createUser({
      email: `trace-${randomUUID()}@example.com`,
      displayName: "Trace",
    });
    const trace = traceparent();
    // A new user has no funds: the order is refused, after every hop has been made.
    await orders.client
      .placeOrder(
        {
          userId: user?.id,
          side: Side.BUY,
          asset: "BTC",
          quoteCurrency: "USD",
          quantity: "0.01",
          idempotencyKey: randomUUID(),
        },
        { metadata: { traceparent: trace.header } },
      )
      .catch((err: { kind: string }) => expect(err.kind).toBe("failed_precondition"));
    users.close();
    orders.close();

    const inTrace = () => receiver.spans.filter((s) => s.traceId === trace.traceId);
    const named = (service: string, name: string, kind: number) =>
      inTrace().find((s) => s.service === service && s.name === name && s.kind === kind);
    await receiver.waitFor(() =>
      Boolean(
        named("rate", "grpc.coinmesh.rate.v1.RateService/GetRate", SERVER) &&
          named("user", "grpc.coinmesh.user.v1.UserService/GetUser", SERVER) &&
          inTrace().some((s) => s.service === "order" && s.name.startsWith("pg.query")),
      ),
    );

    const orderServer = named("order", "grpc.coinmesh.order.v1.OrderService/PlaceOrder", SERVER);
    expect(orderServer?.parentSpanId).toBe(trace.parentId);
    const byId = new Map(inTrace().map((s) => [s.spanId, s]));
    const ancestors = (spanId: string | undefined): string[] => {
      const chain: string[] = [];
      for (
        let s = spanId ? byId.get(spanId) : undefined;
        s;
        s = s.parentSpanId ? byId.get(s.parentSpanId) : undefined
      ) {
        chain.push(s.spanId);
      }
      return chain;
    };
    for (const [service, rpc] of [
      ["rate", "grpc.coinmesh.rate.v1.RateService/GetRate"],
      ["user", "grpc.coinmesh.user.v1.UserService/GetUser"],
    ] as const) {
      const server = named(service, rpc, SERVER);
      const client = server?.parentSpanId ? byId.get(server.parentSpanId) : undefined;
      // The callee's server span is the child of order's client span for the same RPC.
      expect(client, `${service} parent`).toMatchObject({
        service: "order",
        name: rpc,
        kind: CLIENT,
      });
      expect(ancestors(client?.spanId)).toContain(orderServer?.spanId);
      expect(server?.attributes["rpc.grpc.status_code"]).toBe(0);
    }
    for (const query of inTrace().filter((s) => s.name.startsWith("pg."))) {
      expect(ancestors(query.spanId)).toContain(orderServer?.spanId);
    }
    expect(orderServer?.attributes["rpc.grpc.status_code"]).toBe(9); // FAILED_PRECONDITION
  });
});
