import { timestampMs } from "@bufbuild/protobuf/wkt";
import { silentLogger } from "@coinmesh/lib/log";
import { connectTestRedis, TEST_REDIS_URL, until } from "@coinmesh/lib/testing";
import { RateSource } from "@coinmesh/proto/rate/v1/rate_pb";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseRatesPayload } from "../src/rates-payload.ts";
import { createRatesStore } from "../src/rates-store.ts";
import { type FakeUpstream, startFakeUpstream } from "./fake-upstream.ts";
import {
  createFakeClock,
  type RateServer,
  type RateServerOptions,
  startRateServer,
  uniquePrefix,
} from "./harness.ts";
import { startRedisProxy } from "./redis-proxy.ts";

// Outside CI without a Redis the suite is skipped; in CI connectTestRedis throws instead.
const redis = await connectTestRedis();
const prefixes: string[] = [];
const prefix = () => {
  const p = uniquePrefix();
  prefixes.push(p);
  return p;
};

afterAll(async () => {
  if (!redis) return;
  for (const p of prefixes) await redis.del(p, `${p}:refresh-lock`);
  redis.disconnect();
});

const RAW =
  '{"rates":{"btc":{"name":"Bitcoin","unit":"BTC","value":1.0,"type":"crypto"},"usd":{"name":"US Dollar","unit":"$","value":93012.123456789012345678901,"type":"fiat"}}}';

describe.skipIf(!redis)("rates store (real Redis)", () => {
  const store = (keyPrefix: string) => {
    if (!redis) throw new Error("the suite runs only with Redis");
    return createRatesStore({
      redis,
      keyPrefix,
      retentionMs: 7 * 86_400_000,
      lockTtlMs: 5_000,
      log: silentLogger(),
    });
  };

  it("keeps the last known good exactly as fetched, for days", async () => {
    const key = prefix();
    const s = store(key);
    expect(await s.load()).toBeUndefined();
    await s.save({ table: parseRatesPayload(RAW), raw: RAW, fetchedAtMs: 1_700_000_000_123 });
    const loaded = await s.load();
    expect(loaded?.fetchedAtMs).toBe(1_700_000_000_123);
    expect(loaded?.raw).toBe(RAW);
    expect(loaded?.table.values.get("USD")?.toFixed()).toBe("93012.123456789012345678901");
    expect(await redis?.pttl(key)).toBeGreaterThan(6 * 86_400_000);
  });

  it("ignores a malformed entry instead of serving it", async () => {
    const key = prefix();
    await redis?.set(key, `123\n{"rates":{"btc":{"value":"x"}}}`);
    expect(await store(key).load()).toBeUndefined();
    await redis?.set(key, "no newline");
    expect(await store(key).load()).toBeUndefined();
  });

  it("lets one replica hold the refresh lock, and only the holder release it", async () => {
    const key = prefix();
    const a = store(key);
    const b = store(key);
    expect(await a.tryLock()).toBe("acquired");
    expect(await b.tryLock()).toBe("held");
    await b.unlock();
    expect(await b.tryLock()).toBe("held");
    await a.unlock();
    expect(await b.tryLock()).toBe("acquired");
    expect(await redis?.pttl(`${key}:refresh-lock`)).toBeGreaterThan(4_000);
  });
});

describe.skipIf(!redis)("rate service on Redis", () => {
  let upstream: FakeUpstream;
  const servers: RateServer[] = [];
  const closers: (() => Promise<void>)[] = [];
  beforeEach(async () => {
    upstream = await startFakeUpstream();
  });
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.stop()));
    await Promise.all(closers.splice(0).map((close) => close()));
    await upstream.close();
  });
  /** The fetched-at time of the rates stored under keyPrefix, and whether the refresh lock is held. */
  async function stored(keyPrefix: string) {
    const value = await redis?.get(keyPrefix);
    const locked = (await redis?.exists(`${keyPrefix}:refresh-lock`)) === 1;
    return { fetchedAtMs: Number(value?.split("\n", 1)[0]), locked };
  }
  /** Resolves when the server's next refresh attempt has ended, whatever its outcome. */
  function nextRefresh(server: RateServer) {
    return new Promise<void>((resolve) => {
      const off = server.cache.onRefresh(() => {
        off();
        resolve();
      });
    });
  }
  async function start(options: Partial<RateServerOptions>) {
    const server = await startRateServer({ upstream, redisUrl: TEST_REDIS_URL, ...options });
    servers.push(server);
    return server;
  }

  it("coordinates replicas: concurrent cold calls on two replicas make one upstream request", async () => {
    const keyPrefix = prefix();
    const [a, b] = [await start({ keyPrefix }), await start({ keyPrefix })];
    upstream.state.delayMs = 150;
    const calls = [a, b].flatMap((server) =>
      Array.from({ length: 50 }, () => server.grpc.getRate({ base: "BTC", quote: "USD" })),
    );
    const rates = (await Promise.all(calls)).map((r) => r.rate);
    expect(upstream.state.requests).toBe(1);
    expect(rates.every((r) => r?.price === "93012.5")).toBe(true);
    // One replica fetched; the other took the shared copy from Redis.
    const sources = new Set(rates.map((r) => r?.source));
    expect(sources).toEqual(new Set([RateSource.UPSTREAM, RateSource.CACHE]));
  });

  it("picks up a peer's refresh from Redis instead of asking the upstream", async () => {
    const keyPrefix = prefix();
    const clock = createFakeClock();
    const a = await start({ keyPrefix, clock: clock.now });
    await a.grpc.getRate({ base: "btc", quote: "usd" });
    const b = await start({ keyPrefix, clock: clock.now });
    const fromPeer = (await b.grpc.getRate({ base: "btc", quote: "usd" })).rate;
    expect(fromPeer).toMatchObject({ price: "93012.5", source: RateSource.CACHE, stale: false });
    expect(upstream.state.requests).toBe(1);
  });

  it.each(["cut", "stall"] as const)(
    "Redis %s mid-run: GetRate keeps answering within its deadline",
    async (mode) => {
      const proxy = await startRedisProxy();
      closers.push(proxy.close);
      const clock = createFakeClock();
      const server = await start({ keyPrefix: prefix(), clock: clock.now, redisUrl: proxy.url });
      await server.grpc.getRate({ base: "btc", quote: "usd" });
      proxy.setMode(mode);
      upstream.setValue("usd", "94000");
      for (let round = 0; round < 3; round++) {
        clock.advance(61_000);
        const started = performance.now();
        const answers = await Promise.all(
          Array.from({ length: 20 }, () =>
            server.grpc.getRate({ base: "btc", quote: "usd" }, { timeoutMs: 500 }),
          ),
        );
        expect(performance.now() - started).toBeLessThan(500);
        expect(answers.every((a) => a.rate?.price)).toBe(true);
        await server.cache.refresh();
      }
      // The refreshes ran without Redis: the upstream was asked, the new price is served.
      expect((await server.grpc.getRate({ base: "btc", quote: "usd" })).rate?.price).toBe("94000");
      // A cold replica with Redis gone still answers, from the upstream.
      const cold = await start({ keyPrefix: prefix(), redisUrl: proxy.url });
      const rate = (await cold.grpc.getRate({ base: "btc", quote: "usd" }, { timeoutMs: 2_000 }))
        .rate;
      expect(rate).toMatchObject({ price: "94000", source: RateSource.UPSTREAM });
    },
  );

  it("serves fresh within the TTL, then stale at once while one refresh runs across replicas, then fresh", async () => {
    const keyPrefix = prefix();
    const clock = createFakeClock();
    // A long upstream timeout: the test holds the refresh open for as long as it checks.
    const options = { keyPrefix, clock: clock.now, ttlMs: 60_000, upstreamTimeoutMs: 10_000 };
    const a = await start(options);
    const btcUsd = (server: RateServer) => server.grpc.getRate({ base: "BTC", quote: "USD" });
    expect((await btcUsd(a)).rate).toMatchObject({ source: RateSource.UPSTREAM, stale: false });
    const firstAsOf = clock.now();
    expect(await stored(keyPrefix)).toEqual({ fetchedAtMs: firstAsOf, locked: false });
    const b = await start(options);
    expect((await btcUsd(b)).rate).toMatchObject({ source: RateSource.CACHE, stale: false });

    clock.advance(59_999);
    for (const server of [a, b]) {
      expect((await btcUsd(server)).rate).toMatchObject({
        source: RateSource.CACHE,
        stale: false,
        price: "93012.5",
      });
    }
    expect(upstream.state.requests).toBe(1);

    clock.advance(1);
    upstream.setValue("usd", "94000");
    let open = () => {};
    upstream.state.gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const staleOnA = await Promise.all(Array.from({ length: 20 }, () => btcUsd(a)));
    await until(async () => upstream.state.requests === 2, "a's refresh to reach the upstream", {
      timeoutMs: 2_000,
    });
    // The refresh holds the lock in Redis; b answers stale too and leaves the upstream alone.
    expect((await stored(keyPrefix)).locked).toBe(true);
    const triedOnB = nextRefresh(b);
    const staleOnB = await Promise.all(Array.from({ length: 20 }, () => btcUsd(b)));
    await triedOnB;
    for (const { rate } of [...staleOnA, ...staleOnB]) {
      expect(rate).toMatchObject({ source: RateSource.CACHE, stale: true, price: "93012.5" });
      expect(rate?.asOf && timestampMs(rate.asOf)).toBe(firstAsOf);
    }
    expect(upstream.state.requests).toBe(2);

    const refreshed = nextRefresh(a);
    open();
    await refreshed;
    const refreshedAt = clock.now();
    expect(await stored(keyPrefix)).toEqual({ fetchedAtMs: refreshedAt, locked: false });
    expect((await btcUsd(a)).rate).toMatchObject({
      source: RateSource.CACHE,
      stale: false,
      price: "94000",
    });

    // b tries again a second later and takes a's rates from Redis.
    clock.advance(1_000);
    const adopted = nextRefresh(b);
    expect((await btcUsd(b)).rate).toMatchObject({ stale: true, price: "93012.5" });
    await adopted;
    const fresh = (await btcUsd(b)).rate;
    expect(fresh).toMatchObject({ source: RateSource.CACHE, stale: false, price: "94000" });
    expect(fresh?.asOf && timestampMs(fresh.asOf)).toBe(refreshedAt);
    expect(upstream.state.requests).toBe(2);
  });
});
