import { AppError } from "@coinmesh/lib/errors";
import { until } from "@coinmesh/lib/testing";
import { RateSource, type WatchRatesResponse } from "@coinmesh/proto/rate/v1/rate_pb";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type FakeUpstream, startFakeUpstream } from "./fake-upstream.ts";
import {
  createFakeClock,
  type RateServer,
  type RateServerOptions,
  startRateServer,
} from "./harness.ts";

let upstream: FakeUpstream;
const servers: RateServer[] = [];
beforeEach(async () => {
  upstream = await startFakeUpstream();
});
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.stop()));
  await upstream.close();
});
async function start(options: Partial<RateServerOptions> = {}) {
  const server = await startRateServer({ upstream, ...options });
  servers.push(server);
  return server;
}

const prices = (message: IteratorResult<WatchRatesResponse>) =>
  message.done ? [] : message.value.rates.map((r) => `${r.base}/${r.quote}=${r.price}`);

describe("WatchRates", () => {
  it("fans one refresh out to 500 subscribers, and frees everything when they cancel", async () => {
    const clock = createFakeClock();
    const server = await start({ clock: clock.now });
    const controller = new AbortController();
    const streams = Array.from({ length: 500 }, () =>
      server.grpc
        .watchRates({ base: "btc", quotes: ["usd", "eur"] }, { signal: controller.signal })
        [Symbol.asyncIterator](),
    );
    const first = await Promise.all(streams.map((s) => s.next()));
    for (const message of first)
      expect(prices(message)).toEqual(["BTC/USD=93012.5", "BTC/EUR=80368.45"]);
    expect(server.watch.size).toBe(500);
    expect(await server.metric("coinmesh_rate_watch_streams")).toBe(500);

    upstream.setValue("usd", "93100.25");
    clock.advance(60_000);
    await server.cache.refresh();
    const updates = await Promise.all(streams.map((s) => s.next()));
    for (const message of updates) {
      expect(prices(message)).toEqual(["BTC/USD=93100.25"]);
      expect(message.value?.rates[0]?.source).toBe(RateSource.CACHE);
    }
    // One request for the first rates, one refresh: not one poll per stream.
    expect(upstream.state.requests).toBe(2);

    controller.abort();
    await until(() => server.watch.size === 0, "every stream to be freed");
    await until(
      async () => (await server.metric("coinmesh_rate_watch_streams")) === 0,
      "the active-streams gauge to reach 0",
    );
  });

  it("refreshes from its own loop once the rates pass the TTL", async () => {
    const clock = createFakeClock();
    const server = await start({ clock: clock.now, ttlMs: 5_000 });
    const controller = new AbortController();
    const stream = server.connect
      .watchRates({ base: "usd", quotes: ["eur"] }, { signal: controller.signal })
      [Symbol.asyncIterator]();
    expect((await stream.next()).value?.rates[0]?.price).toBe("0.86406074452358554");
    upstream.setValue("eur", "80000");
    clock.advance(5_000);
    // No call drives this refresh: the loop ticks every second and sees the rates are due.
    const next = await stream.next();
    expect(next.value?.rates.map((r: { price: string }) => r.price)).toEqual([
      "0.860099448998790485",
    ]);
    controller.abort();
  });

  it("sends a slow subscriber only the latest prices it has not seen", async () => {
    const clock = createFakeClock();
    const server = await start({ clock: clock.now });
    const controller = new AbortController();
    const stream = server.watch.watch("btc", ["usd", "eur", "eth"], controller.signal);
    expect((await stream.next()).value?.map((r) => r.price)).toEqual([
      "93012.5",
      "80368.45",
      "30.5",
    ]);
    for (const usd of ["1", "2", "3"]) {
      upstream.setValue("usd", usd);
      upstream.setValue("eur", usd === "2" ? "9" : "80368.45");
      clock.advance(60_000);
      await server.cache.refresh();
    }
    // Three refreshes, one message: USD changed (to the last value); EUR changed and changed back.
    const next = await stream.next();
    expect(next.value?.map((r) => `${r.quote}=${r.price}`)).toEqual(["USD=3"]);
    controller.abort();
    await stream.return(undefined);
    expect(server.watch.size).toBe(0);
  });

  it("ends streams UNAVAILABLE once the rates pass the maximum staleness", async () => {
    const clock = createFakeClock();
    const server = await start({ clock: clock.now, ttlMs: 60_000, maxStalenessMs: 300_000 });
    const stream = server.grpc.watchRates({ base: "btc", quotes: ["usd"] })[Symbol.asyncIterator]();
    await stream.next();
    upstream.state.mode = "error";
    clock.advance(301_000);
    await server.cache.refresh();
    const err = await stream.next().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(AppError);
    expect((err as AppError).kind).toBe("unavailable");
    await until(() => server.watch.size === 0, "every stream to be freed");
  });

  it("ends a stream NOT_FOUND when a refresh drops a watched code", async () => {
    const clock = createFakeClock();
    const server = await start({ clock: clock.now });
    const stream = server.grpc.watchRates({ base: "btc", quotes: ["xau"] })[Symbol.asyncIterator]();
    await stream.next();
    upstream.remove("xau");
    clock.advance(60_000);
    await server.cache.refresh();
    await expect(stream.next()).rejects.toMatchObject({ kind: "not_found" });
    await until(() => server.watch.size === 0, "every stream to be freed");
  });

  it("rejects bad requests before streaming", async () => {
    const server = await start();
    const first = (req: { base: string; quotes: string[] }) =>
      server.grpc.watchRates(req)[Symbol.asyncIterator]().next();
    await expect(first({ base: "btc", quotes: [] })).rejects.toMatchObject({
      kind: "invalid_argument",
    });
    await expect(first({ base: "", quotes: ["usd"] })).rejects.toMatchObject({
      kind: "invalid_argument",
    });
    await expect(first({ base: "btc", quotes: ["nope"] })).rejects.toMatchObject({
      kind: "not_found",
    });
    await until(() => server.watch.size === 0, "every stream to be freed");
    expect(await server.metric("coinmesh_rate_watch_streams")).toBe(0);
  });

  it("ends open streams UNAVAILABLE on shutdown", async () => {
    const server = await start();
    const stream = server.grpc.watchRates({ base: "btc", quotes: ["usd"] })[Symbol.asyncIterator]();
    await stream.next();
    const shutdown = server.server.shutdown(2_000);
    await expect(stream.next()).rejects.toMatchObject({ kind: "unavailable" });
    await shutdown;
    expect(server.watch.size).toBe(0);
  });
});
