import { randomUUID } from "node:crypto";
import { RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bearer, outcome, type Protocol, token } from "./harness.ts";
import { SLOW_ID, startProbe } from "./probe.ts";

const DEFAULT_TIMEOUT_MS = 4_000;
const MAX_TIMEOUT_MS = 6_000;
const MAX_STREAM_DURATION_MS = 800;
let probe: Awaited<ReturnType<typeof startProbe>>;
let owner: string;
let ownerHeaders: Record<string, string>;

beforeAll(async () => {
  probe = await startProbe({
    DEFAULT_TIMEOUT_MS: String(DEFAULT_TIMEOUT_MS),
    MAX_TIMEOUT_MS: String(MAX_TIMEOUT_MS),
    MAX_STREAM_DURATION_MS: String(MAX_STREAM_DURATION_MS),
  });
  owner = randomUUID();
  ownerHeaders = bearer(await token(owner));
});

afterAll(async () => {
  await probe?.stop();
});

/** How long the backend was given, from the deadline it saw. */
const budget = () => {
  const call = probe.last();
  return (call.deadline ?? Number.POSITIVE_INFINITY) - call.receivedAt;
};

/** How the rest of a stream ends: "OK" or the error's code. */
async function ending(stream: AsyncIterator<unknown>): Promise<string> {
  try {
    while (!(await stream.next()).done);
    return "OK";
  } catch (err) {
    return Code[ConnectError.from(err).code] ?? "UNKNOWN";
  }
}

const watch = { base: "BTC", quotes: ["EUR"] };

describe.each(["connect-json-h1", "grpc-web-h1", "grpc", "grpc-gzip"] as Protocol[])(
  "deadlines over %s",
  (protocol) => {
    const users = () => probe.gateway.client(UserService, protocol);
    const rates = () => probe.gateway.client(RateService, protocol);

    it("passes the client's timeout on", async () => {
      await users().getUser({ id: owner }, { headers: ownerHeaders, timeoutMs: 1_500 });
      expect(budget()).toBeGreaterThan(1_000);
      expect(budget()).toBeLessThanOrEqual(1_500);
    });

    it("applies the default when the client sets none", async () => {
      await users().getUser({ id: owner }, { headers: ownerHeaders });
      expect(budget()).toBeGreaterThan(DEFAULT_TIMEOUT_MS - 1_000);
      expect(budget()).toBeLessThanOrEqual(DEFAULT_TIMEOUT_MS);
    });

    it("caps a longer timeout at the maximum instead of refusing it", async () => {
      await users().getUser({ id: owner }, { headers: ownerHeaders, timeoutMs: 60_000 });
      expect(budget()).toBeGreaterThan(MAX_TIMEOUT_MS - 1_000);
      expect(budget()).toBeLessThanOrEqual(MAX_TIMEOUT_MS);
    });

    // Past 2^31 - 1 ms (about 24.8 days) a Node timer fires at once.
    const hugeTimeout = protocol.startsWith("connect")
      ? { "connect-timeout-ms": "9999999999" }
      : { "grpc-timeout": "99999999S" };

    it("caps a timeout longer than a timer can hold instead of failing at once", async () => {
      await users().getUser({ id: owner }, { headers: { ...ownerHeaders, ...hugeTimeout } });
      expect(budget()).toBeGreaterThan(MAX_TIMEOUT_MS - 1_000);
      expect(budget()).toBeLessThanOrEqual(MAX_TIMEOUT_MS);
      for await (const _ of rates().watchRates(watch, { headers: hugeTimeout })) break;
      expect(budget()).toBeGreaterThan(MAX_STREAM_DURATION_MS - 500);
      expect(budget()).toBeLessThanOrEqual(MAX_STREAM_DURATION_MS);
    });

    it("ends a call that outlives its timeout with DEADLINE_EXCEEDED", async () => {
      const slow = users().getUser(
        { id: SLOW_ID },
        { headers: bearer(await token(SLOW_ID)), timeoutMs: 300 },
      );
      expect(await outcome(slow)).toBe("DeadlineExceeded");
    });

    it("ends a stream without a timeout at MAX_STREAM_DURATION_MS with DEADLINE_EXCEEDED", async () => {
      const stream = rates().watchRates(watch)[Symbol.asyncIterator]();
      await stream.next();
      expect(budget()).toBeGreaterThan(MAX_STREAM_DURATION_MS - 500);
      expect(budget()).toBeLessThanOrEqual(MAX_STREAM_DURATION_MS);
      expect(await ending(stream)).toBe("DeadlineExceeded");
    });

    it("passes a stream's timeout on, capped at MAX_STREAM_DURATION_MS", async () => {
      const short = rates().watchRates(watch, { timeoutMs: 300 })[Symbol.asyncIterator]();
      expect(await ending(short)).toBe("DeadlineExceeded");
      expect(budget()).toBeGreaterThan(0);
      expect(budget()).toBeLessThanOrEqual(300);
      for await (const _ of rates().watchRates(watch, { timeoutMs: 60_000 })) break;
      expect(budget()).toBeGreaterThan(MAX_STREAM_DURATION_MS - 500);
      expect(budget()).toBeLessThanOrEqual(MAX_STREAM_DURATION_MS);
    });
  },
);

// The HTTP/2 protocols take the fast path; HTTP/1.1 and streams go through connect-node.
describe.each(["connect-binary-h2", "grpc", "connect-json-h1", "grpc-web-h1"] as Protocol[])(
  "metadata over %s",
  (protocol) => {
    const users = () => probe.gateway.client(UserService, protocol);
    const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    it("tells the backend the verified subject, and only that", async () => {
      await users().getUser(
        { id: owner },
        { headers: { ...ownerHeaders, "x-auth-subject": randomUUID(), "x-auth-admin": "true" } },
      );
      expect(probe.last()).toMatchObject({ subject: owner, admin: false });
    });

    it("marks admins", async () => {
      const admin = randomUUID();
      await users().listUsers({}, { headers: bearer(await token(admin, { admin: true })) });
      expect(probe.last()).toMatchObject({ subject: admin, admin: true });
    });

    it("drops a client's x-auth-* headers on public calls", async () => {
      await users().createUser(
        { email: "a@example.com", displayName: "A" },
        { headers: { "x-auth-subject": owner, "x-auth-admin": "true" } },
      );
      expect(probe.last()).toMatchObject({ subject: undefined, admin: false });
    });

    it("forwards trace context, the request id and the canary pin", async () => {
      await users().getUser(
        { id: owner },
        {
          headers: {
            ...ownerHeaders,
            traceparent,
            tracestate: "vendor=x",
            "x-request-id": "req-123",
            "x-canary": "always",
          },
        },
      );
      expect(probe.last().requestId).toBe("req-123");
      expect(probe.last().propagate).toMatchObject({
        traceparent,
        tracestate: "vendor=x",
        "x-canary": "always",
      });
    });

    it("generates a request id and a traceparent when the client sends none", async () => {
      await users().getUser({ id: owner }, { headers: ownerHeaders });
      const first = probe.last();
      await users().getUser(
        { id: owner },
        { headers: { ...ownerHeaders, traceparent: "garbage" } },
      );
      const second = probe.last();
      for (const call of [first, second]) {
        expect(call.requestId).toMatch(/^[0-9a-f-]{36}$/);
        expect(call.propagate.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      }
      expect(second.requestId).not.toBe(first.requestId);
      expect(second.propagate.traceparent).not.toBe(first.propagate.traceparent);
    });

    it.each([
      ["garbage", "garbage"],
      ["an all-zero trace id", `00-${"0".repeat(32)}-b7ad6b7169203331-01`],
      ["version ff", traceparent.replace(/^00/, "ff")],
    ])("drops the client's tracestate with a malformed traceparent (%s)", async (_name, bad) => {
      await users().getUser(
        { id: owner },
        { headers: { ...ownerHeaders, traceparent: bad, tracestate: "vendor=x" } },
      );
      expect(probe.last().propagate.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      expect(probe.last().propagate.traceparent).not.toBe(bad);
      expect(probe.last().propagate.tracestate).toBeUndefined();
    });

    it("forwards trace context, the request id and the canary pin on a WatchRates stream", async () => {
      const rates = probe.gateway.client(RateService, protocol);
      const headers = {
        traceparent,
        tracestate: "vendor=x",
        "x-request-id": "req-stream",
        "x-canary": "always",
      };
      for await (const _ of rates.watchRates(watch, { headers })) break;
      expect(probe.last().requestId).toBe("req-stream");
      expect(probe.last().propagate).toMatchObject({
        traceparent,
        tracestate: "vendor=x",
        "x-canary": "always",
      });
      for await (const _ of rates.watchRates(watch)) break;
      expect(probe.last().requestId).toMatch(/^[0-9a-f-]{36}$/);
      expect(probe.last().propagate.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      expect(probe.last().propagate.traceparent).not.toBe(traceparent);
    });
  },
);
