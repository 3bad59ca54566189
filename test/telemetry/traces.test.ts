import { randomBytes, randomUUID } from "node:crypto";
import { createServiceClient } from "@coinmesh/lib/grpc-client";
import { OrderService, Side } from "@coinmesh/proto/order/v1/order_pb";
import { RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import { createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mintToken } from "../../gateway/src/token.ts";
import { startOtlpReceiver } from "../support/otlp-receiver.ts";
import { type Platform, startPlatform, TEST_JWT_SECRET } from "../support/platform.ts";

const SERVER = 2;
const CLIENT = 3;

let receiver: Awaited<ReturnType<typeof startOtlpReceiver>>;
let platform: Platform;

beforeAll(async () => {
  receiver = await startOtlpReceiver();
  platform = await startPlatform({
    gateway: true,
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

const connect = (): Transport =>
  createConnectTransport({ baseUrl: platform.gateway ?? "", httpVersion: "1.1" });

function traceparent() {
  const traceId = randomBytes(16).toString("hex");
  const parentId = randomBytes(8).toString("hex");
  return { traceId, parentId, header: `00-${traceId}-${parentId}-01` };
}

describe("tracing", () => {
  it("follows one PlaceOrder through order, user, rate and Postgres as a single trace", async () => {
    const users = createServiceClient(UserService, platform.user);
    const { user } = await users.client.createUser({
      email: `trace-${randomUUID()}@example.com`,
      displayName: "Trace",
    });
    users.close();
    const token = await mintToken({ sub: user?.id ?? "", secret: TEST_JWT_SECRET });
    const orders = createClient(OrderService, connect());
    const trace = traceparent();
    // A new user has no funds: the order is refused, after every hop has been made.
    await orders
      .placeOrder(
        {
          userId: user?.id,
          side: Side.BUY,
          asset: "BTC",
          quoteCurrency: "USD",
          quantity: "0.01",
          idempotencyKey: randomUUID(),
        },
        { headers: { traceparent: trace.header, authorization: `Bearer ${token}` } },
      )
      .then(
        () => expect.fail("a user without funds cannot buy"),
        (err: { code: number }) => expect(err.code).toBe(9),
      );

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

    await receiver.waitFor(() =>
      Boolean(named("gateway", "coinmesh.order.v1.OrderService/PlaceOrder", SERVER)),
    );
    const byId = new Map(inTrace().map((s) => [s.spanId, s]));
    // The gateway continues the caller's trace; its outbound call is the parent of order's span.
    const edge = named("gateway", "coinmesh.order.v1.OrderService/PlaceOrder", SERVER);
    expect(edge?.parentSpanId).toBe(trace.parentId);
    const orderServer = named("order", "grpc.coinmesh.order.v1.OrderService/PlaceOrder", SERVER);
    const forwarded = orderServer?.parentSpanId ? byId.get(orderServer.parentSpanId) : undefined;
    expect(forwarded).toMatchObject({ service: "gateway", kind: CLIENT });
    expect(forwarded?.parentSpanId).toBe(edge?.spanId);
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

  it("traces a WatchRates stream through the gateway over gRPC to the rate service", async () => {
    const rates = createClient(
      RateService,
      createGrpcTransport({ baseUrl: platform.gateway ?? "" }),
    );
    const trace = traceparent();
    const abort = new AbortController();
    const stream = rates.watchRates(
      { base: "BTC", quotes: ["USD", "EUR"] },
      { headers: { traceparent: trace.header }, signal: abort.signal },
    );
    for await (const message of stream) {
      expect(message.rates.map((r) => r.quote)).toEqual(["USD", "EUR"]);
      break;
    }
    abort.abort();
    const inTrace = () => receiver.spans.filter((s) => s.traceId === trace.traceId);
    const find = (service: string, kind: number) =>
      inTrace().find(
        (s) =>
          s.service === service && s.kind === kind && s.name.endsWith("RateService/WatchRates"),
      );
    await receiver.waitFor(() => Boolean(find("gateway", SERVER) && find("rate", SERVER)));
    const edge = find("gateway", SERVER);
    expect(edge?.parentSpanId).toBe(trace.parentId);
    const rateServer = find("rate", SERVER);
    const forwarded = inTrace().find((s) => s.spanId === rateServer?.parentSpanId);
    expect(forwarded).toMatchObject({ service: "gateway", kind: CLIENT });
    expect(forwarded?.parentSpanId).toBe(edge?.spanId);
  });
});
