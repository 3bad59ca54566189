import { readFileSync } from "node:fs";
import type { DescService } from "@bufbuild/protobuf";
import { labelledCounter } from "@coinmesh/lib/app-metrics";
import { metricsInterceptor } from "@coinmesh/lib/connect-metrics";
import { tracingInterceptor } from "@coinmesh/lib/connect-tracing";
import { createForwarder, type Forwarder } from "@coinmesh/lib/grpc-forward";
import type { Logger } from "@coinmesh/lib/log";
import type { Metrics } from "@coinmesh/lib/metrics";
import type { Redis } from "@coinmesh/lib/redis";
import { AccountService } from "@coinmesh/proto/order/v1/account_pb";
import { OrderService } from "@coinmesh/proto/order/v1/order_pb";
import { RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import { Code, ConnectError, createContextValues } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { createAdmission } from "./admission.ts";
import { AUTH_FAILURE_REASONS, createAuthenticator } from "./auth.ts";
import { accessTable } from "./authorization.ts";
import type { GatewayConfig } from "./config.ts";
import { createFastPath } from "./fast-path.ts";
import { createForwarding } from "./forward.ts";
import { createHealth } from "./health.ts";
import { createMemoryRateLimiter, createRedisRateLimiter } from "./rate-limit.ts";
import { capClientTimeout, gatewayRoutes, peerKey, refuseUndecodableGet } from "./routes.ts";
import { startHttpServer } from "./server.ts";

export interface GatewayDeps {
  config: GatewayConfig;
  log: Logger;
  metrics: Metrics;
  /** Shares rate limits across replicas when set; memory buckets otherwise. */
  redis: Redis | undefined;
  /** Redis keys start with it; tests pass their own. */
  rateLimitKeyPrefix?: string;
  /** OpenTelemetry is exporting: continue callers' traces with a span per call. */
  tracing?: boolean;
}

/** One long-lived connection per backend process, shared by the services it serves. */
function createBackends(deps: GatewayDeps) {
  const { config, metrics } = deps;
  const forwarder = (address: string, services: DescService[]) =>
    createForwarder(address, {
      methods: services.flatMap((s) => s.methods),
      observer: metrics.client,
      tracing: deps.tracing,
    });
  const user = forwarder(config.backends.user, [UserService]);
  const order = forwarder(config.backends.order, [AccountService, OrderService]);
  const rate = forwarder(config.backends.rate, [RateService]);
  const backends = new Map<DescService, Forwarder>([
    [UserService, user],
    [AccountService, order],
    [OrderService, order],
    [RateService, rate],
  ]);
  return {
    backends,
    close() {
      for (const f of [user, order, rate]) f.close();
    },
  };
}

/** The gateway as main wires it: listening, forwarding, measured. */
export async function startGateway(deps: GatewayDeps) {
  const { config, log, metrics, redis } = deps;
  const { backends, close: closeBackends } = createBackends(deps);
  const health = createHealth(backends);
  const { perSecond, burst } = config.rateLimit;
  const limiter =
    perSecond <= 0
      ? undefined
      : redis
        ? createRedisRateLimiter(
            { perSecond, burst },
            { redis, keyPrefix: deps.rateLimitKeyPrefix ?? "coinmesh:gateway:rate-limit:", log },
          )
        : createMemoryRateLimiter({ perSecond, burst });
  const authFailures = labelledCounter(metrics.registry, {
    name: "coinmesh_gateway_auth_failures_total",
    help: "Calls refused for a missing or invalid bearer token, by reason.",
    label: "reason",
    values: AUTH_FAILURE_REASONS,
  });
  const rateLimited = labelledCounter(metrics.registry, {
    name: "coinmesh_gateway_rate_limited_total",
    help: "Calls refused by the per-subject (per-IP when anonymous) rate limit.",
    label: "caller",
    values: ["subject", "anonymous"],
  });
  const admission = createAdmission({
    authenticator: createAuthenticator(config.jwt),
    limiter,
    trustedProxyHops: config.trustedProxyHops,
    observer: metrics.server,
    authFailed: (reason) => authFailures[reason](),
    rateLimited: (anonymous) => (anonymous ? rateLimited.anonymous() : rateLimited.subject()),
  });
  const forwarding = createForwarding({
    backends,
    defaultTimeoutMs: config.defaultTimeoutMs,
    maxTimeoutMs: config.maxTimeoutMs,
    maxStreamDurationMs: config.maxStreamDurationMs,
    maxInFlight: config.maxInFlight,
  });
  // Every public call runs through these, on the Connect path and the gRPC fast path alike.
  // Without an exporter a span would be a no-op that still costs time on every call.
  // Tracing outermost, so that the latency is recorded inside the call's span: a sampled one
  // becomes the histogram bucket's exemplar.
  const interceptors = [
    ...(deps.tracing ? [tracingInterceptor] : []),
    metricsInterceptor(metrics.server),
  ];
  const shutdown = new AbortController();
  const connect = connectNodeAdapter({
    routes: gatewayRoutes({ admission, forwarding, health }),
    interceptors,
    readMaxBytes: config.maxMessageBytes,
    shutdownSignal: shutdown.signal,
    contextValues: (req) => createContextValues().set(peerKey, req.socket.remoteAddress),
  });
  // At most 1 day (config.ts), which a timer holds; see capClientTimeout.
  const timeoutCapMs = Math.max(config.maxTimeoutMs, config.maxStreamDurationMs);
  const server = await startHttpServer({
    host: config.host,
    port: config.port,
    tls: config.tls && {
      cert: readFileSync(config.tls.certFile),
      key: readFileSync(config.tls.keyFile),
    },
    connect(req, res) {
      capClientTimeout(req.headers, timeoutCapMs);
      if (!refuseUndecodableGet(req, res)) connect(req, res);
    },
    fastPath: createFastPath({
      routes: accessTable,
      admission,
      forwarding,
      interceptors,
      observer: metrics.server,
      maxMessageBytes: config.maxMessageBytes,
      log,
    }),
    ready: health.ready,
    corsOrigins: config.corsOrigins,
    maxConcurrentStreams: config.maxConcurrentStreams,
    headersTimeoutMs: config.headersTimeoutMs,
    requestTimeoutMs: Math.max(config.headersTimeoutMs, config.maxTimeoutMs),
    idleTimeoutMs: config.idleTimeoutMs,
    log,
  });
  return {
    port: server.port,
    health,
    /** Not ready at once; open streams end UNAVAILABLE; unary calls get graceMs to finish. */
    async close(graceMs: number) {
      health.startShutdown();
      shutdown.abort(new ConnectError("the gateway is shutting down", Code.Unavailable));
      await server.close(graceMs);
      closeBackends();
    },
  };
}

export type RunningGateway = Awaited<ReturnType<typeof startGateway>>;
