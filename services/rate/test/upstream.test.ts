import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { createUpstreamClient, parseRetryAfter, UpstreamFailure } from "../src/upstream.ts";
import { type FakeUpstream, startFakeUpstream } from "./fake-upstream.ts";
import { captureLogger, createFakeClock } from "./harness.ts";

let upstream: FakeUpstream;
beforeAll(async () => {
  upstream = await startFakeUpstream();
});
afterAll(() => upstream.close());

interface ClientOptions {
  attempts?: number;
  clock?: () => number;
  backoffMs?: number;
  maxBackoffMs?: number;
  random?: () => number;
}

function client(options: ClientOptions = {}) {
  const counts = { ok: 0, error: 0, timeout: 0, rate_limited: 0, invalid: 0 };
  const { log, lines } = captureLogger();
  const upstreamRequest = {
    ok: () => void counts.ok++,
    error: () => void counts.error++,
    timeout: () => void counts.timeout++,
    rate_limited: () => void counts.rate_limited++,
    invalid: () => void counts.invalid++,
  };
  const c = createUpstreamClient({
    baseUrl: `${upstream.url}/`,
    apiKey: "secret-key",
    apiKeyHeader: "x-cg-pro-api-key",
    timeoutMs: 150,
    attempts: options.attempts ?? 3,
    backoffMs: "backoffMs" in options ? options.backoffMs : 5,
    maxBackoffMs: options.maxBackoffMs,
    random: options.random,
    clock: options.clock ?? Date.now,
    metrics: { upstreamRequest },
    log,
  });
  return { client: c, counts, lines };
}

async function failure(promise: Promise<unknown>): Promise<UpstreamFailure> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UpstreamFailure);
  return err as UpstreamFailure;
}

beforeEach(() => {
  upstream.state.mode = "ok";
  upstream.state.next = [];
  upstream.state.requests = 0;
  upstream.state.arrivals = [];
  upstream.state.retryAfter = "30";
});

describe("upstream client", () => {
  it("fetches and decodes the rates, sending the API key in the configured header", async () => {
    const { client: c, counts } = client();
    const { table, raw } = await c.fetchRates();
    expect(table.values.get("USD")?.toFixed()).toBe("93012.5");
    expect(raw).toContain('"usd"');
    expect(upstream.state.lastHeaders?.["x-cg-pro-api-key"]).toBe("secret-key");
    expect(counts.ok).toBe(1);
  });

  it("retries a 500 with backoff and gives up after the last attempt", async () => {
    upstream.state.mode = "error";
    const { client: c, counts } = client();
    const err = await failure(c.fetchRates());
    expect(err.outcome).toBe("error");
    expect(err.message).toBe("HTTP 500");
    expect(upstream.state.requests).toBe(3);
    expect(counts.error).toBe(3);
  });

  it("recovers when a retry succeeds", async () => {
    upstream.state.next = ["error", "stall"];
    const { client: c, counts } = client();
    await c.fetchRates();
    expect(counts).toMatchObject({ error: 1, timeout: 1, ok: 1 });
  });

  it("times out a stalled upstream", async () => {
    upstream.state.mode = "stall";
    const { client: c, counts } = client({ attempts: 2 });
    const err = await failure(c.fetchRates());
    expect(err.outcome).toBe("timeout");
    expect(counts.timeout).toBe(2);
  });

  it("honours a long Retry-After: no request until it has passed, across fetches", async () => {
    upstream.state.mode = "rate_limited";
    const clock = createFakeClock();
    const { client: c, counts } = client({ clock: clock.now });
    const err = await failure(c.fetchRates());
    expect(err.outcome).toBe("rate_limited");
    expect(err.retryAfterMs).toBe(30_000);
    expect(upstream.state.requests).toBe(1);
    upstream.state.mode = "ok";
    clock.advance(29_000);
    const early = await failure(c.fetchRates());
    expect(early.retryAfterMs).toBe(1_000);
    expect(upstream.state.requests).toBe(1);
    clock.advance(1_000);
    await c.fetchRates();
    expect(upstream.state.requests).toBe(2);
    expect(counts).toMatchObject({ rate_limited: 1, ok: 1 });
  });

  it("waits out a short Retry-After and retries", async () => {
    upstream.state.retryAfter = "0";
    upstream.state.next = ["rate_limited"];
    const { client: c, counts } = client();
    await c.fetchRates();
    expect(counts).toMatchObject({ rate_limited: 1, ok: 1 });
  });

  it.each(["garbage", "malformed"] as const)(
    "rejects a %s payload at once with a clear log line",
    async (mode) => {
      upstream.state.mode = mode;
      const { client: c, counts, lines } = client();
      const err = await failure(c.fetchRates());
      expect(err.outcome).toBe("invalid");
      expect(upstream.state.requests).toBe(1);
      expect(counts.invalid).toBe(1);
      const line = lines.find((l) => l.level === "error");
      expect(line?.msg).toMatch(/malformed rates payload; rejected whole, not cached/);
      expect(JSON.stringify(line?.fields)).toMatch(mode === "garbage" ? /not JSON/ : /btc.value/);
    },
  );

  it("reports a refused connection as an error", async () => {
    const closed = await startFakeUpstream();
    await closed.close();
    const counts = { ok: 0, error: 0, timeout: 0, rate_limited: 0, invalid: 0 };
    const c = createUpstreamClient({
      baseUrl: closed.url,
      apiKeyHeader: "x",
      timeoutMs: 500,
      attempts: 1,
      clock: Date.now,
      metrics: {
        upstreamRequest: {
          ok() {},
          error: () => counts.error++,
          timeout() {},
          rate_limited() {},
          invalid() {},
        },
      },
      log: captureLogger().log,
    });
    const err = await failure(c.fetchRates());
    expect(err.outcome).toBe("error");
    expect(err.message).toMatch(/ECONNREFUSED/);
  });
});

describe("upstream backoff", () => {
  /**
   * Fails every attempt of one fetch and returns the sleeps between attempts (the timers whose
   * callback is a bare promise resolver, as upstream.ts's sleep sets) and the gaps the upstream
   * saw between requests.
   */
  async function backoff(options: ClientOptions, randoms: number[]) {
    upstream.state.mode = "error";
    upstream.state.requests = 0;
    upstream.state.arrivals = [];
    let call = 0;
    const random = () => randoms[call++ % randoms.length] ?? 0;
    const { client: c } = client({ ...options, random });
    const timers = vi.spyOn(globalThis, "setTimeout");
    let calls: unknown[][];
    try {
      await failure(c.fetchRates());
    } finally {
      calls = [...timers.mock.calls];
      timers.mockRestore();
    }
    const sleeps = calls
      .filter(([callback]) => String(callback).includes("[native code]"))
      .map(([, ms]) => ms);
    const arrivals = upstream.state.arrivals;
    const gaps = arrivals.slice(1).map((at, i) => at - (arrivals[i] ?? at));
    return { sleeps, gaps };
  }

  it("sleeps random × min(cap, base × 2^(attempt − 1)) between attempts: 200 ms base by default", async () => {
    const low = await backoff({ backoffMs: undefined }, [0.25, 0.75, 0]);
    expect(low.sleeps).toEqual([50, 300]);
    const high = await backoff({ backoffMs: undefined }, [0.75, 0.25, 0]);
    expect(high.sleeps).toEqual([150, 100]);
    // The sleeps really lie between the requests (1 ms for timer rounding).
    for (const { sleeps, gaps } of [low, high]) {
      expect(gaps).toHaveLength(2);
      for (const [i, gap] of gaps.entries()) {
        expect(gap).toBeGreaterThanOrEqual(Number(sleeps[i]) - 1);
      }
    }
  });

  it("never sleeps past the cap, nor at all with random 0", async () => {
    const capped = await backoff({ attempts: 5, backoffMs: 64, maxBackoffMs: 150 }, [1]);
    expect(capped.sleeps).toEqual([64, 128, 150, 150]);
    expect(capped.gaps).toHaveLength(4);
    const none = await backoff({ attempts: 5, backoffMs: 64, maxBackoffMs: 150 }, [0]);
    expect(none.sleeps).toEqual([0, 0, 0, 0]);
  });
});

describe("parseRetryAfter", () => {
  it("reads seconds and HTTP dates", () => {
    const now = Date.parse("2026-11-22T10:00:00Z");
    expect(parseRetryAfter("120", now)).toBe(120_000);
    expect(parseRetryAfter("Sun, 22 Nov 2026 10:00:30 GMT", now)).toBe(30_000);
    expect(parseRetryAfter("soon", now)).toBeUndefined();
    expect(parseRetryAfter(null, now)).toBeUndefined();
  });
});
