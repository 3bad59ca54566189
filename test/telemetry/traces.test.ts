import { randomBytes, randomUUID } from "node:crypto";
import { createServiceClient } from "@coinmesh/lib/grpc-client";
import { OrderService, Side } from "@coinmesh/proto/order/v1/order_pb";
import { RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import { createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mintToken } from "../../gateway/src/token.ts";
import { type ReceivedSpan, startOtlpReceiver } from "../support/otlp-receiver.ts";
import { type Platform, startPlatform, TEST_JWT_SECRET } from "../support/platform.ts";

const SERVER = 2;
const CLIENT = 3;
const STATUS_ERROR = 2;
const NOT_FOUND = 5;
const FAILED_PRECONDITION = 9;
const STABLE = "1.4.0";
const CANARY = "1.5.0-rc.1";
const ENVIRONMENT = "telemetry-test";

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
      SERVICE_VERSION: STABLE,
      DEPLOYMENT_ENVIRONMENT: ENVIRONMENT,
    },
    // The rate service plays the canary; its 1 s TTL lets a test's call refresh the cache.
    envOf: { rate: { SERVICE_VERSION: CANARY, RATES_TTL_SECONDS: "1" } },
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

const spansOf = (traceId: string) => receiver.spans.filter((s) => s.traceId === traceId);

/** Span ids from the span's parent up to the trace's root, as far as they were received. */
function ancestorIds(span: ReceivedSpan | undefined): string[] {
  const byId = new Map(spansOf(span?.traceId ?? "").map((s) => [s.spanId, s]));
  const chain: string[] = [];
  for (let s = byId.get(span?.parentSpanId ?? ""); s; s = byId.get(s.parentSpanId ?? "")) {
    chain.push(s.spanId);
  }
  return chain;
}

/** rpc.system, rpc.service, rpc.method and rpc.grpc.status_code, as the span's name says. */
function expectRpcAttributes(span: ReceivedSpan | undefined, code: number) {
  const [service, method] = (span?.name ?? "").replace(/^grpc\./, "").split("/");
  expect(span?.attributes, `${span?.service} ${span?.kind} ${span?.name}`).toMatchObject({
    "rpc.system": span?.name.startsWith("grpc.") ? "grpc" : "connect_rpc",
    "rpc.service": service,
    "rpc.method": method,
    "rpc.grpc.status_code": code,
  });
}

/** A GetRate through the gateway; resolves once the rate service's span is in. */
async function tracedGetRate(quote = "USD") {
  const trace = traceparent();
  const rates = createClient(RateService, connect());
  const code = await rates
    .getRate({ base: "BTC", quote }, { headers: { traceparent: trace.header } })
    .then(
      () => 0,
      (err: { code: number }) => err.code,
    );
  await receiver.waitFor(() =>
    spansOf(trace.traceId).some((s) => s.service === "rate" && s.kind === SERVER),
  );
  return { ...trace, code };
}

let refusedOrder: Promise<ReturnType<typeof traceparent>> | undefined;
/**
 * A PlaceOrder by a user without funds, refused after every hop has been made; made once for
 * the tests that read its trace, and resolved when every process's spans are in.
 */
function placeRefusedOrder() {
  refusedOrder ??= (async () => {
    const users = createServiceClient(UserService, platform.user);
    const { user } = await users.client.createUser({
      email: `trace-${randomUUID()}@example.com`,
      displayName: "Trace",
    });
    users.close();
    const token = await mintToken({ sub: user?.id ?? "", secret: TEST_JWT_SECRET });
    const orders = createClient(OrderService, connect());
    const trace = traceparent();
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
        (err: { code: number }) => expect(err.code).toBe(FAILED_PRECONDITION),
      );
    const has = (service: string, name: string, kind: number) =>
      spansOf(trace.traceId).some(
        (s) => s.service === service && s.name === name && s.kind === kind,
      );
    await receiver.waitFor(
      () =>
        has("rate", "grpc.coinmesh.rate.v1.RateService/GetRate", SERVER) &&
        has("user", "grpc.coinmesh.user.v1.UserService/GetUser", SERVER) &&
        has("order", "grpc.coinmesh.order.v1.OrderService/PlaceOrder", SERVER) &&
        has("gateway", "coinmesh.order.v1.OrderService/PlaceOrder", SERVER) &&
        spansOf(trace.traceId).some((s) => s.service === "order" && s.name.startsWith("pg.")),
    );
    return trace;
  })();
  return refusedOrder;
}

describe("tracing", () => {
  it("follows one PlaceOrder through order, user, rate and Postgres as a single trace", async () => {
    const trace = await placeRefusedOrder();
    const inTrace = () => spansOf(trace.traceId);
    const named = (service: string, name: string, kind: number) =>
      inTrace().find((s) => s.service === service && s.name === name && s.kind === kind);
    const byId = new Map(inTrace().map((s) => [s.spanId, s]));
    // The gateway continues the caller's trace; its outbound call is the parent of order's span.
    const edge = named("gateway", "coinmesh.order.v1.OrderService/PlaceOrder", SERVER);
    expect(edge?.parentSpanId).toBe(trace.parentId);
    const orderServer = named("order", "grpc.coinmesh.order.v1.OrderService/PlaceOrder", SERVER);
    const forwarded = orderServer?.parentSpanId ? byId.get(orderServer.parentSpanId) : undefined;
    expect(forwarded).toMatchObject({ service: "gateway", kind: CLIENT });
    expect(forwarded?.parentSpanId).toBe(edge?.spanId);
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
      expect(ancestorIds(client)).toContain(orderServer?.spanId);
      expectRpcAttributes(server, 0);
      expectRpcAttributes(client, 0);
    }
    for (const query of inTrace().filter((s) => s.name.startsWith("pg."))) {
      expect(ancestorIds(query)).toContain(orderServer?.spanId);
    }
    expectRpcAttributes(orderServer, FAILED_PRECONDITION);
    expectRpcAttributes(forwarded, FAILED_PRECONDITION);
    expectRpcAttributes(edge, FAILED_PRECONDITION);
  });

  it("labels every process's spans with its service name, version and environment", async () => {
    const trace = await placeRefusedOrder();
    const resources = new Map(spansOf(trace.traceId).map((s) => [s.service, s.resource]));
    expect([...resources.keys()].sort()).toEqual(["gateway", "order", "rate", "user"]);
    for (const [service, resource] of resources) {
      expect(resource, service).toMatchObject({
        "service.name": service,
        // The canary and the stable version are told apart in every span.
        "service.version": service === "rate" ? CANARY : STABLE,
        "deployment.environment": ENVIRONMENT,
      });
    }
  });

  it("records a failing call's gRPC status on the gateway's and the service's spans", async () => {
    const trace = await tracedGetRate("XXX");
    expect(trace.code).toBe(NOT_FOUND);
    await receiver.waitFor(() => spansOf(trace.traceId).length >= 3);
    const of = (service: string, kind: number) =>
      spansOf(trace.traceId).find((s) => s.service === service && s.kind === kind);
    expectRpcAttributes(of("gateway", SERVER), NOT_FOUND);
    expectRpcAttributes(of("gateway", CLIENT), NOT_FOUND);
    expectRpcAttributes(of("rate", SERVER), NOT_FOUND);
    // For a client every non-OK code is an error (semantic conventions).
    expect(of("gateway", CLIENT)?.status).toBe(STATUS_ERROR);
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
    const inTrace = () => spansOf(trace.traceId);
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

describe("a GetRate that refreshes the rate cache", () => {
  let refresh: Promise<Awaited<ReturnType<typeof tracedGetRate>>> | undefined;
  /** Past the 1 s TTL a GetRate starts a refresh (Redis, then the upstream, which fails once). */
  const staleGetRate = () => {
    refresh ??= (async () => {
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      platform.upstream.state.next = ["garbage"];
      const trace = await tracedGetRate();
      expect(trace.code).toBe(0);
      return trace;
    })();
    return refresh;
  };
  const rateServerSpan = (traceId: string) =>
    spansOf(traceId).find((s) => s.service === "rate" && s.kind === SERVER);

  it("shows its Redis commands as client spans inside the rate service's span", async () => {
    const trace = await staleGetRate();
    const isRedis = (s: ReceivedSpan) => s.attributes["db.system.name"] === "redis";
    // The shared copy is read, then the refresh lock taken and released.
    await receiver.waitFor(() => spansOf(trace.traceId).filter(isRedis).length >= 3);
    const server = rateServerSpan(trace.traceId);
    for (const command of spansOf(trace.traceId).filter(isRedis)) {
      expect(command).toMatchObject({ service: "rate", kind: CLIENT });
      expect(ancestorIds(command), command.name).toContain(server?.spanId);
    }
    expect(
      spansOf(trace.traceId)
        .filter(isRedis)
        .map((s) => s.name),
    ).toContain("get");
  });

  it("logs the failed refresh with the request's trace_id and span_id", async () => {
    const trace = await staleGetRate();
    const rate = platform.processes.rate;
    const line = await rate?.waitForLog(
      (l) => l.msg === "rates refresh failed" && l.trace_id === trace.traceId,
    );
    expect(line?.span_id).toBe(rateServerSpan(trace.traceId)?.spanId);
  });
});

describe("metrics exemplars", () => {
  const scrape = async (service: string, accept?: string) => {
    const res = await fetch(`http://127.0.0.1:${platform.metricsPorts[service]}/metrics`, {
      headers: accept ? { accept } : {},
    });
    return { contentType: res.headers.get("content-type"), body: await res.text() };
  };
  // What Prometheus 2.42 sends.
  const PROMETHEUS_ACCEPT =
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

  it("link a call's latency buckets to its trace in OpenMetrics, and stay out of plain text", async () => {
    const trace = await tracedGetRate();
    const exemplar = `# {trace_id="${trace.traceId}"}`;
    const bucketsWithExemplar = (body: string, histogram: string) =>
      body
        .split("\n")
        .filter(
          (l) =>
            l.startsWith(`${histogram}_bucket{`) &&
            l.includes('grpc_method="GetRate"') &&
            l.includes(exemplar),
        );

    const rate = await scrape("rate", PROMETHEUS_ACCEPT);
    expect(rate.contentType).toMatch(/^application\/openmetrics-text; version=1\.0\.0/);
    expect(rate.body.endsWith("# EOF\n")).toBe(true);
    expect(bucketsWithExemplar(rate.body, "grpc_server_handling_seconds")).toHaveLength(1);
    const gateway = await scrape("gateway", "application/openmetrics-text");
    expect(bucketsWithExemplar(gateway.body, "grpc_server_handling_seconds")).toHaveLength(1);
    expect(bucketsWithExemplar(gateway.body, "grpc_client_handling_seconds")).toHaveLength(1);

    // After an OpenMetrics scrape, a plain one still gets Prometheus text, counters intact.
    const text = await scrape("rate");
    expect(text.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(text.body).not.toContain("# {");
    expect(text.body).not.toContain("# EOF");
    expect(text.body).toContain("# TYPE grpc_server_started_total counter\n");
    expect(text.body).toMatch(
      /^grpc_server_handled_total\{[^}]*grpc_method="GetRate"[^}]*grpc_code="OK"\} \d+$/m,
    );
    expect(text.body).toMatch(
      /^grpc_server_handling_seconds_bucket\{le="\+Inf",[^}]*grpc_method="GetRate"[^}]*\} \d+$/m,
    );
  });
});
