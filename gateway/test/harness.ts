import { randomUUID } from "node:crypto";
import type { DescService } from "@bufbuild/protobuf";
import { silentLogger } from "@coinmesh/lib/log";
import { createMetrics } from "@coinmesh/lib/metrics";
import type { Redis } from "@coinmesh/lib/redis";
import { createTestDatabase } from "@coinmesh/lib/testing";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import { type Client, Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import {
  compressionGzip,
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
  Http2SessionManager,
} from "@connectrpc/connect-node";
import {
  ORDER_MIGRATIONS,
  startOrderService,
  startUserService,
} from "../../services/order/test/services.ts";

/** What a failed call carried to the client (code, message, decoded details). */
export { rejection } from "../../services/order/test/services.ts";

import { startFakeUpstream } from "../../services/rate/test/fake-upstream.ts";
import { startRateServer } from "../../services/rate/test/harness.ts";
import { readConfig } from "../src/config.ts";
import { startGateway } from "../src/gateway.ts";
import { mintToken, type TokenClaims } from "../src/token.ts";

export const TEST_SECRET = "gateway-tests-hs256-secret-of-at-least-32-bytes";

/** A token the test gateways accept (or, with overrides, one they must refuse). */
export const token = (sub: string, claims: Partial<TokenClaims> = {}) =>
  mintToken({ sub, secret: TEST_SECRET, ...claims });

export const bearer = (jwt: string) => ({ authorization: `Bearer ${jwt}` });

export interface BackendAddresses {
  user: string;
  order: string;
  rate: string;
}

/** A gateway on 127.0.0.1:0 in front of the given backends, with its own metrics registry. */
export async function startTestGateway(
  backends: BackendAddresses,
  env: Record<string, string> = {},
  options: { redis?: Redis; rateLimitKeyPrefix?: string } = {},
) {
  const config = readConfig({
    HOST: "127.0.0.1",
    PORT: "0",
    JWT_SECRET: TEST_SECRET,
    USER_SERVICE_ADDR: backends.user,
    ORDER_SERVICE_ADDR: backends.order,
    RATE_SERVICE_ADDR: backends.rate,
    RATE_LIMIT_PER_SECOND: "0",
    ...env,
  });
  const metrics = createMetrics();
  const gateway = await startGateway({
    config,
    log: silentLogger(),
    metrics,
    redis: options.redis,
    rateLimitKeyPrefix: options.rateLimitKeyPrefix,
  });
  const url = `http://127.0.0.1:${gateway.port}`;
  const sessions: Http2SessionManager[] = [];
  return {
    ...gateway,
    config,
    url,
    metrics,
    /** A connect-es client of the gateway over one of the PROTOCOLS. */
    client<S extends DescService>(service: S, protocol: Protocol): Client<S> {
      return createClient(service, transportOf(protocol, url, sessions));
    },
    /** The value of one series of the gateway's registry, 0 when absent. */
    async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
      const metric = metrics.registry.getSingleMetric(name);
      if (!metric) throw new Error(`no metric ${name}`);
      const { values } = await metric.get();
      const match = values.find((v) =>
        Object.entries(labels).every(([k, value]) => v.labels[k] === value),
      );
      return match?.value ?? 0;
    },
    async stop() {
      for (const session of sessions) session.abort();
      await gateway.close(200);
    },
  };
}

export type TestGateway = Awaited<ReturnType<typeof startTestGateway>>;

/**
 * Every way a client reaches the gateway. "grpc" takes the gateway's gRPC fast path; "grpc-gzip"
 * (compressed requests) and everything else go through connect-node.
 */
export const PROTOCOLS = [
  "connect-json-h1",
  "connect-binary-h1",
  "connect-json-h2",
  "connect-binary-h2",
  "grpc-web-h1",
  "grpc-web-h2",
  "grpc",
  "grpc-gzip",
] as const;
export type Protocol = (typeof PROTOCOLS)[number];

function transportOf(
  protocol: Protocol,
  baseUrl: string,
  sessions: Http2SessionManager[],
): Transport {
  const h2 = () => {
    const sessionManager = new Http2SessionManager(baseUrl);
    sessions.push(sessionManager);
    return { httpVersion: "2" as const, sessionManager };
  };
  switch (protocol) {
    // connect-node's Connect transport speaks binary unless told otherwise.
    case "connect-json-h1":
      return createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false });
    case "connect-binary-h1":
      return createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true });
    case "connect-json-h2":
      return createConnectTransport({ baseUrl, ...h2(), useBinaryFormat: false });
    case "connect-binary-h2":
      return createConnectTransport({ baseUrl, ...h2(), useBinaryFormat: true });
    case "grpc-web-h1":
      return createGrpcWebTransport({ baseUrl, httpVersion: "1.1" });
    case "grpc-web-h2":
      return createGrpcWebTransport({ baseUrl, ...h2() });
    case "grpc":
      return createGrpcTransport({ baseUrl, ...h2() });
    case "grpc-gzip":
      return createGrpcTransport({
        baseUrl,
        ...h2(),
        sendCompression: compressionGzip,
        compressMinBytes: 0,
      });
  }
}

/**
 * The real user, rate and order services on fresh databases, on 127.0.0.1:0: user and order as
 * their own tests start them (services/order/test), rate on a fake upstream (services/rate/test).
 */
export async function startBackends() {
  const upstream = await startFakeUpstream();
  const rate = await startRateServer({ upstream, allowSnapshot: false });
  const user = await startUserService();
  const orderDb = await createTestDatabase(ORDER_MIGRATIONS);
  const order = await startOrderService({
    db: orderDb,
    userAddress: user.address,
    rateAddress: rate.server.address,
  });
  return {
    addresses: { user: user.address, order: order.address, rate: rate.server.address },
    upstream,
    /** A new user, straight at the user service; returns its id. */
    createUser: user.createUser,
    async stop() {
      await order.stop();
      await Promise.all([rate.stop(), user.stop(), orderDb.drop(), upstream.close()]);
    },
  };
}

export type Backends = Awaited<ReturnType<typeof startBackends>>;

/** A user created through the gateway (sign-up is public), with a token of its own. */
export async function signUp(gateway: TestGateway, claims: Partial<TokenClaims> = {}) {
  const users = gateway.client(UserService, "connect-binary-h1");
  const { user } = await users.createUser({
    email: `${randomUUID()}@example.com`,
    displayName: "Gateway Test",
  });
  if (!user) throw new Error("CreateUser returned no user");
  const jwt = await token(user.id, claims);
  return { id: user.id, token: jwt, headers: bearer(jwt) };
}

/** The outcome of a call as a code name: "OK" or the error's code. */
export async function outcome(call: Promise<unknown> | AsyncIterable<unknown>): Promise<string> {
  try {
    if (Symbol.asyncIterator in call) {
      // A stream: its first message is enough to know it was allowed.
      for await (const _ of call) break;
    } else {
      await call;
    }
    return "OK";
  } catch (err) {
    return Code[ConnectError.from(err).code] ?? "UNKNOWN";
  }
}
