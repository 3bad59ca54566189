import { AppError } from "@coinmesh/lib/errors";
import { silentLogger } from "@coinmesh/lib/log";
import { describe, expect, it } from "vitest";
import { createRates } from "../src/rates.ts";
import {
  createRatesCache,
  type FetchedRates,
  type RatesCacheDeps,
  type SharedRates,
} from "../src/rates-cache.ts";
import { parseRatesPayload } from "../src/rates-payload.ts";
import { loadSnapshot } from "../src/snapshot.ts";
import { UpstreamFailure } from "../src/upstream.ts";
import { createFakeClock } from "./harness.ts";

const TTL = 60_000;
const MAX_STALE = 900_000;
const RETRY = 5_000;

const ratesWithUsd = (usd: string): FetchedRates => {
  const raw = `{"rates":{"btc":{"name":"Bitcoin","unit":"BTC","value":1,"type":"crypto"},"usd":{"name":"US Dollar","unit":"$","value":${usd},"type":"fiat"}}}`;
  return { table: parseRatesPayload(raw), raw };
};

/** An in-memory upstream: answers with `usd` or fails with `failure`; `hold` keeps calls open. */
function memoryUpstream() {
  const upstream = {
    calls: 0,
    usd: "90000",
    failure: undefined as Error | undefined,
    hold: undefined as Promise<void> | undefined,
    async fetchRates() {
      upstream.calls++;
      if (upstream.hold) await upstream.hold;
      if (upstream.failure) throw upstream.failure;
      return ratesWithUsd(upstream.usd);
    },
  };
  return upstream;
}

/**
 * Redis as a cold replica finds it while a peer refreshes: the lock held and nothing stored;
 * after that the peer's rates, fetched at fetchedAtMs, and the lock free.
 */
function peerRefreshing(fetchedAtMs: number): SharedRates {
  let loads = 0;
  return {
    async load() {
      loads++;
      return loads > 1 ? { ...ratesWithUsd("95000"), fetchedAtMs } : undefined;
    },
    async save() {},
    async tryLock() {
      return loads > 1 ? "acquired" : "held";
    },
    async unlock() {},
  };
}

async function setup(options: { snapshot?: boolean; shared?: (now: number) => SharedRates } = {}) {
  const clock = createFakeClock(Date.parse("2026-11-22T12:00:00Z"));
  const upstream = memoryUpstream();
  const counts = { hit: 0, stale: 0, miss: 0 };
  const deps: RatesCacheDeps = {
    upstream,
    shared: options.shared?.(clock.now()),
    snapshot: options.snapshot ? await loadSnapshot() : undefined,
    clock: clock.now,
    ttlMs: TTL,
    maxStalenessMs: MAX_STALE,
    retryDelayMs: RETRY,
    peerWaitMs: 1_000,
    metrics: {
      cacheRequest: {
        hit: () => counts.hit++,
        stale: () => counts.stale++,
        miss: () => counts.miss++,
      },
    },
    log: silentLogger(),
  };
  const cache = createRatesCache(deps);
  const rates = createRates({ cache });
  return { clock, upstream, counts, cache, rates };
}

async function rejection(promise: Promise<unknown>): Promise<AppError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AppError);
  return err as AppError;
}

describe("rates cache", () => {
  it("fetches once for many cold callers, then serves the fresh copy without the upstream", async () => {
    const { upstream, counts, rates, clock } = await setup();
    const cold = await Promise.all(Array.from({ length: 50 }, () => rates.getRate("btc", "usd")));
    expect(upstream.calls).toBe(1);
    expect(cold.every((r) => r.source === "upstream" && !r.stale && r.price === "90000")).toBe(
      true,
    );
    expect(cold[0]?.asOf.getTime()).toBe(clock.now());
    clock.advance(TTL - 1);
    const warm = await rates.getRate("BTC", "USD");
    expect(warm).toMatchObject({ source: "cache", stale: false, price: "90000" });
    expect(upstream.calls).toBe(1);
    expect(counts).toEqual({ hit: 1, stale: 0, miss: 50 });
  });

  it("serves stale after the TTL while exactly one refresh runs, then the new rates", async () => {
    const { upstream, counts, rates, clock, cache } = await setup();
    await rates.getRate("btc", "usd");
    const firstAsOf = clock.now();
    clock.advance(TTL);
    upstream.usd = "91000";
    let release = () => {};
    upstream.hold = new Promise((resolve) => {
      release = resolve;
    });
    const during = await Promise.all(Array.from({ length: 20 }, () => rates.getRate("btc", "usd")));
    expect(during.every((r) => r.stale && r.source === "cache" && r.price === "90000")).toBe(true);
    expect(during[0]?.asOf.getTime()).toBe(firstAsOf);
    expect(upstream.calls).toBe(2);
    release();
    await cache.refresh();
    const after = await rates.getRate("btc", "usd");
    expect(after).toMatchObject({ stale: false, source: "cache", price: "91000" });
    expect(after.asOf.getTime()).toBe(clock.now());
    expect(upstream.calls).toBe(2);
    expect(counts.stale).toBe(20);
  });

  it("keeps the last known good through upstream failures until the maximum staleness", async () => {
    const { upstream, rates, clock, cache } = await setup();
    await rates.getRate("btc", "usd");
    upstream.failure = new UpstreamFailure("error", "HTTP 500");
    clock.advance(TTL);
    await rates.getRate("btc", "usd");
    await cache.refresh();
    expect(upstream.calls).toBe(2);
    // Backing off: reads within the retry delay do not call the upstream again.
    clock.advance(RETRY - 1);
    expect(await rates.getRate("btc", "usd")).toMatchObject({ stale: true, price: "90000" });
    await cache.refresh();
    expect(upstream.calls).toBe(3);
    clock.advance(MAX_STALE - TTL - (RETRY - 1));
    expect(await rates.getRate("btc", "usd")).toMatchObject({ stale: true, source: "cache" });
    clock.advance(1);
    const err = await rejection(rates.getRate("btc", "usd"));
    expect(err.kind).toBe("unavailable");
    expect(err.details.reason).toBe("RATES_TOO_OLD");
    expect(err.details.metadata).toEqual({ age_seconds: "900", max_staleness_seconds: "900" });
    await rejection(rates.getRates("btc", ["usd"]));
  });

  it("falls back to the snapshot only when allowed, marked as such", async () => {
    const offline = await setup();
    offline.upstream.failure = new UpstreamFailure("timeout", "no answer");
    const none = await rejection(offline.rates.getRate("btc", "usd"));
    expect(none.kind).toBe("unavailable");
    expect(none.details.reason).toBe("RATES_UNAVAILABLE");

    const allowed = await setup({ snapshot: true });
    allowed.upstream.failure = new UpstreamFailure("timeout", "no answer");
    const rate = await allowed.rates.getRate("btc", "usd");
    expect(rate).toMatchObject({ source: "snapshot", stale: true, price: "93012.5" });
    expect(rate.asOf.toISOString()).toBe("2026-11-20T00:00:00.000Z");
    // Later reads get the snapshot at once; the upstream is retried only after the delay.
    await allowed.rates.getRate("btc", "eur");
    expect(allowed.upstream.calls).toBe(1);
    allowed.clock.advance(RETRY);
    allowed.upstream.failure = undefined;
    expect((await allowed.rates.getRate("btc", "usd")).source).toBe("snapshot");
    await allowed.cache.refresh();
    expect(await allowed.rates.getRate("btc", "usd")).toMatchObject({
      source: "cache",
      price: "90000",
    });
  });

  it("serves the snapshot instead of a last known good past the maximum staleness", async () => {
    const { upstream, rates, clock } = await setup({ snapshot: true });
    await rates.getRate("btc", "usd");
    upstream.failure = new UpstreamFailure("error", "HTTP 500");
    clock.advance(MAX_STALE + 1);
    expect(await rates.getRate("btc", "usd")).toMatchObject({ source: "snapshot", stale: true });
  });

  it("respects the upstream's Retry-After beyond the usual retry delay", async () => {
    const { upstream, rates, clock, cache } = await setup();
    await rates.getRate("btc", "usd");
    upstream.failure = new UpstreamFailure("rate_limited", "HTTP 429", 120_000);
    clock.advance(TTL);
    await cache.refresh();
    upstream.failure = undefined;
    clock.advance(119_999);
    cache.refreshIfDue();
    expect(upstream.calls).toBe(2);
    clock.advance(1);
    cache.refreshIfDue();
    expect(upstream.calls).toBe(3);
  });

  it("keeps a peer's fresh rates for the TTL instead of asking the upstream a second later", async () => {
    const { upstream, rates, clock } = await setup({ shared: peerRefreshing });
    expect(await rates.getRate("btc", "usd")).toMatchObject({ source: "cache", price: "95000" });
    clock.advance(1_000);
    await rates.listCurrencies();
    await new Promise((resolve) => setImmediate(resolve));
    expect(upstream.calls).toBe(0);
    expect(await rates.getRate("btc", "usd")).toMatchObject({ stale: false, price: "95000" });
  });

  it("stops a waiting caller when its call is cancelled", async () => {
    const { upstream, rates } = await setup();
    upstream.hold = new Promise(() => {});
    const controller = new AbortController();
    const pending = rates.getRate("btc", "usd", controller.signal);
    controller.abort(new AppError("cancelled", "call cancelled"));
    expect((await rejection(pending)).kind).toBe("cancelled");
  });

  it("derives any pair, case-insensitively, and names unknown codes", async () => {
    const { rates } = await setup();
    expect((await rates.getRate("usd", "btc")).price).toBe("0.000011111111111111");
    expect((await rates.getRate("Usd", "uSD")).price).toBe("1");
    const unknown = await rejection(rates.getRates("usd", ["btc", "xyz", "abc", "xyz"]));
    expect(unknown.kind).toBe("not_found");
    expect(unknown.message).toBe("unknown currency XYZ, ABC");
    expect(unknown.details).toMatchObject({
      reason: "UNKNOWN_CURRENCY",
      metadata: { code: "XYZ,ABC" },
    });
    const invalid = await rejection(rates.getRates("", ["", ...Array(100).fill("usd")]));
    expect(invalid.kind).toBe("invalid_argument");
    expect(invalid.details.fieldViolations?.map((v) => v.field)).toEqual([
      "base",
      "quotes",
      "quotes[0]",
    ]);
  });

  it("memoizes one rate per pair and version", async () => {
    const { rates } = await setup();
    const fetched = await rates.getRate("btc", "usd");
    expect(fetched.source).toBe("upstream");
    const cached = await rates.getRate("btc", "usd");
    expect(cached.source).toBe("cache");
    expect(await rates.getRate("BTC", "Usd")).toBe(cached);
    expect((await rates.getRates("btc", ["usd", "btc"]))[0]).toBe(cached);
  });
});
