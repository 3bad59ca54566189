import { randomUUID } from "node:crypto";
import { AccountService } from "@coinmesh/proto/order/v1/account_pb";
import { RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Backends,
  PROTOCOLS,
  rejection,
  signUp,
  startBackends,
  startTestGateway,
  type TestGateway,
} from "./harness.ts";

let backends: Backends;
let gateway: TestGateway;
let user: Awaited<ReturnType<typeof signUp>>;

/** A client straight at a backend, for the answer the gateway must pass on unchanged. */
const direct = <S extends Parameters<typeof createClient>[0]>(service: S, address: string) =>
  createClient(service, createGrpcTransport({ baseUrl: `http://${address}` }));

beforeAll(async () => {
  backends = await startBackends();
  gateway = await startTestGateway(backends.addresses);
  user = await signUp(gateway);
  await gateway
    .client(AccountService, "grpc")
    .deposit(
      { userId: user.id, currency: "USD", amount: "50", idempotencyKey: randomUUID() },
      { headers: user.headers },
    );
});

afterAll(async () => {
  await gateway?.stop();
  await backends?.stop();
});

describe.each(PROTOCOLS)("%s", (protocol) => {
  it("signs up in public and reads its own user with a token", async () => {
    const users = gateway.client(UserService, protocol);
    const email = `${randomUUID()}@example.com`;
    const created = await users.createUser({ email, displayName: "Ada" });
    expect(created.user?.email).toBe(email);
    const read = await users.getUser({ id: user.id }, { headers: user.headers });
    expect(read.user?.id).toBe(user.id);
  });

  it("relays INVALID_ARGUMENT with every field violation exactly as the backend sent it", async () => {
    const request = { email: "not an email", displayName: " " };
    const want = await rejection(direct(UserService, backends.addresses.user).createUser(request));
    const got = await rejection(gateway.client(UserService, protocol).createUser(request));
    expect(got).toEqual(want);
    expect(got.code).toBe("InvalidArgument");
    expect(got.violations).toEqual([
      "email: is not a valid email address",
      "display_name: is required",
    ]);
  });

  it("relays FAILED_PRECONDITION with the shortfall in its details", async () => {
    const request = {
      userId: user.id,
      currency: "USD",
      amount: "1000000",
      idempotencyKey: randomUUID(),
    };
    const got = await rejection(
      gateway.client(AccountService, protocol).withdraw(request, { headers: user.headers }),
    );
    const want = await rejection(
      direct(AccountService, backends.addresses.order).withdraw({
        ...request,
        idempotencyKey: randomUUID(),
      }),
    );
    expect(got).toEqual(want);
    expect(got.code).toBe("FailedPrecondition");
    expect(got.preconditions.length).toBeGreaterThan(0);
  });

  it("streams rates", async () => {
    const controller = new AbortController();
    const stream = gateway
      .client(RateService, protocol)
      .watchRates({ base: "BTC", quotes: ["USD", "EUR"] }, { signal: controller.signal });
    for await (const message of stream) {
      expect(message.rates.map((r) => r.quote)).toEqual(["USD", "EUR"]);
      expect(Number(message.rates[0]?.price)).toBeGreaterThan(0);
      break;
    }
    controller.abort();
  });
});

it("answers Connect GET for read-only RPCs, and refuses it for writes", async () => {
  const message = encodeURIComponent(JSON.stringify({ base: "BTC", quote: "USD" }));
  const res = await fetch(
    `${gateway.url}/coinmesh.rate.v1.RateService/GetRate?encoding=json&message=${message}`,
  );
  expect(res.status).toBe(200);
  expect(((await res.json()) as { rate: { base: string } }).rate.base).toBe("BTC");
  const write = await fetch(
    `${gateway.url}/coinmesh.user.v1.UserService/CreateUser?encoding=json&message=%7B%7D`,
  );
  expect(write.status).toBe(405);
});

it("measures public calls and backend calls on both paths", async () => {
  const labels = { grpc_service: "coinmesh.user.v1.UserService", grpc_method: "GetUser" };
  const ok = { ...labels, grpc_code: "OK" };
  expect(await gateway.metric("grpc_server_handled_total", ok)).toBeGreaterThanOrEqual(
    PROTOCOLS.length,
  );
  expect(await gateway.metric("grpc_client_handled_total", ok)).toBeGreaterThanOrEqual(
    PROTOCOLS.length,
  );
  expect(
    await gateway.metric("grpc_server_handled_total", {
      grpc_method: "CreateUser",
      grpc_code: "INVALID_ARGUMENT",
    }),
  ).toBeGreaterThanOrEqual(PROTOCOLS.length);
});
