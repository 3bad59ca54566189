import { randomBytes, randomUUID } from "node:crypto";
import { silentLogger } from "@coinmesh/lib/log";
import { createRedis } from "@coinmesh/lib/redis";
import { connectTestRedis, inCI } from "@coinmesh/lib/testing";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { clientAddress } from "../src/admission.ts";
import { createMemoryRateLimiter } from "../src/rate-limit.ts";
import {
  bearer,
  outcome,
  type Protocol,
  startTestGateway,
  type TestGateway,
  token,
} from "./harness.ts";
import { startProbe } from "./probe.ts";

// One call a second, bursts of two: the third quick call is refused.
const LIMITS = { RATE_LIMIT_PER_SECOND: "1", RATE_LIMIT_BURST: "2" };
const signUpCall = (
  gateway: TestGateway,
  protocol: Protocol,
  headers: Record<string, string> = {},
) =>
  outcome(
    gateway
      .client(UserService, protocol)
      .createUser({ email: "a@example.com", displayName: "A" }, { headers }),
  );
const getCall = async (gateway: TestGateway, protocol: Protocol, sub: string) =>
  outcome(
    gateway
      .client(UserService, protocol)
      .getUser({ id: sub }, { headers: bearer(await token(sub)) }),
  );

describe("the token bucket", () => {
  it("refills at the configured rate up to the burst", () => {
    let now = 0;
    const limiter = createMemoryRateLimiter({ perSecond: 2, burst: 3 }, () => now);
    expect([1, 2, 3, 4].map(() => limiter.takeNow("k"))).toEqual([true, true, true, false]);
    now += 499;
    expect(limiter.takeNow("k")).toBe(false);
    now += 1;
    expect(limiter.takeNow("k")).toBe(true);
    now += 60_000;
    expect([1, 2, 3, 4].map(() => limiter.takeNow("k"))).toEqual([true, true, true, false]);
    expect(limiter.takeNow("other")).toBe(true);
  });

  it("keys anonymous callers by the address the trusted proxies saw", () => {
    expect(clientAddress("6.6.6.6, 1.2.3.4", "10.0.0.9", 1)).toBe("1.2.3.4");
    expect(clientAddress("6.6.6.6, 1.2.3.4, 10.0.0.2", "10.0.0.9", 2)).toBe("1.2.3.4");
    expect(clientAddress("1.2.3.4", "10.0.0.9", 3)).toBe("1.2.3.4");
    expect(clientAddress("6.6.6.6", "10.0.0.9", 0)).toBe("10.0.0.9");
    expect(clientAddress(null, "10.0.0.9", 1)).toBe("10.0.0.9");
  });
});

describe.each(["connect-binary-h1", "grpc"] as Protocol[])("in memory, over %s", (protocol) => {
  let probe: Awaited<ReturnType<typeof startProbe>>;
  beforeAll(async () => {
    probe = await startProbe(LIMITS);
  });
  afterAll(async () => {
    await probe?.stop();
  });

  it("limits each subject on its own", async () => {
    const [alice, bob] = [randomUUID(), randomUUID()];
    const alices = [];
    for (let i = 0; i < 3; i++) alices.push(await getCall(probe.gateway, protocol, alice));
    expect(alices).toEqual(["OK", "OK", "ResourceExhausted"]);
    expect(await getCall(probe.gateway, protocol, bob)).toBe("OK");
    expect(
      await probe.gateway.metric("coinmesh_gateway_rate_limited_total", { caller: "subject" }),
    ).toBe(1);
  });

  it("limits anonymous callers per address", async () => {
    const calls = [];
    for (let i = 0; i < 3; i++) calls.push(await signUpCall(probe.gateway, protocol));
    expect(calls).toEqual(["OK", "OK", "ResourceExhausted"]);
    expect(
      await probe.gateway.metric("coinmesh_gateway_rate_limited_total", { caller: "anonymous" }),
    ).toBe(1);
    expect(
      await probe.gateway.metric("grpc_server_handled_total", {
        grpc_method: "CreateUser",
        grpc_code: "RESOURCE_EXHAUSTED",
      }),
    ).toBe(1);
  });
});

it("trusts X-Forwarded-For only as far as TRUSTED_PROXY_HOPS says", async () => {
  const probe = await startProbe({ ...LIMITS, TRUSTED_PROXY_HOPS: "1" });
  try {
    const from = (ip: string) => ({ "x-forwarded-for": `9.9.9.9, ${ip}` });
    const a = [];
    for (let i = 0; i < 3; i++) a.push(await signUpCall(probe.gateway, "grpc", from("1.1.1.1")));
    expect(a).toEqual(["OK", "OK", "ResourceExhausted"]);
    expect(await signUpCall(probe.gateway, "grpc", from("2.2.2.2"))).toBe("OK");
  } finally {
    await probe.stop();
  }
});

describe("shared through Redis", () => {
  let redis: Redis | undefined;
  beforeAll(async () => {
    redis = await connectTestRedis();
  });
  afterAll(() => {
    redis?.disconnect();
  });

  it("shares one bucket per subject between gateway replicas", async (t) => {
    if (!redis) return t.skip(`no Redis reachable${inCI ? "" : " (outside CI)"}`);
    const probe = await startProbe();
    const prefix = `coinmesh:test:${randomBytes(6).toString("hex")}:`;
    const replicas = [
      await startTestGateway(
        { user: probe.backend.address, order: "127.0.0.1:1", rate: "127.0.0.1:1" },
        LIMITS,
        { redis, rateLimitKeyPrefix: prefix },
      ),
      await startTestGateway(
        { user: probe.backend.address, order: "127.0.0.1:1", rate: "127.0.0.1:1" },
        LIMITS,
        { redis, rateLimitKeyPrefix: prefix },
      ),
    ];
    try {
      const sub = randomUUID();
      const calls = [];
      for (const gateway of [replicas[0], replicas[1], replicas[0]]) {
        calls.push(await getCall(gateway as TestGateway, "grpc", sub));
      }
      expect(calls).toEqual(["OK", "OK", "ResourceExhausted"]);
      expect(await redis.exists(`${prefix}sub:${sub}`)).toBe(1);
      expect(await redis.pttl(`${prefix}sub:${sub}`)).toBeGreaterThan(0);
    } finally {
      for (const gateway of replicas) await gateway.stop();
      await probe.stop();
    }
  });

  it("falls back to the replica's own bucket when Redis is away, without failing calls", async () => {
    const probe = await startProbe();
    const deadRedis = createRedis("redis://127.0.0.1:1", silentLogger(), {
      connectTimeoutMs: 100,
      maxReconnectDelayMs: 100,
    });
    const gateway = await startTestGateway(
      { user: probe.backend.address, order: "127.0.0.1:1", rate: "127.0.0.1:1" },
      LIMITS,
      { redis: deadRedis },
    );
    try {
      const sub = randomUUID();
      const calls = [];
      for (let i = 0; i < 3; i++) calls.push(await getCall(gateway, "connect-json-h1", sub));
      expect(calls).toEqual(["OK", "OK", "ResourceExhausted"]);
    } finally {
      await gateway.stop();
      deadRedis.disconnect();
      await probe.stop();
    }
  });
});
