import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { AppError } from "@coinmesh/lib/errors";
import { BadRequestSchema, ErrorInfoSchema } from "@coinmesh/proto/google/rpc/error_details_pb";
import { CurrencyType, RateSource } from "@coinmesh/proto/rate/v1/rate_pb";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SNAPSHOT_AS_OF } from "../src/snapshot.ts";
import { type FakeUpstream, startFakeUpstream } from "./fake-upstream.ts";
import {
  createFakeClock,
  type RateServer,
  type RateServerOptions,
  startRateServer,
} from "./harness.ts";

/** What a connect client sees of a failed call. */
interface CallError {
  code: number;
  rawMessage: string;
  findDetails<D extends DescMessage>(schema: D): MessageShape<D>[];
}
const NOT_FOUND = 5;
const INVALID_ARGUMENT = 3;
const UNAVAILABLE = 14;
const FAILED_PRECONDITION = 9;

async function callError(promise: Promise<unknown>): Promise<CallError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toHaveProperty("findDetails");
  return err as CallError;
}

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

describe("GetRate", () => {
  it("answers 100 concurrent cold calls with one upstream request", async () => {
    const { grpc } = await start();
    upstream.state.delayMs = 100;
    const responses = await Promise.all(
      Array.from({ length: 100 }, () => grpc.getRate({ base: "BTC", quote: "USD" })),
    );
    expect(upstream.state.requests).toBe(1);
    for (const { rate } of responses) {
      expect(rate).toMatchObject({ base: "BTC", quote: "USD", price: "93012.5", stale: false });
      expect(rate?.source).toBe(RateSource.UPSTREAM);
    }
  });

  it("derives any pair exactly, case-insensitively; base = quote is 1", async () => {
    const { grpc, connect } = await start();
    const { rate } = await grpc.getRate({ base: "usd", quote: "Eur" });
    expect(rate).toMatchObject({ base: "USD", quote: "EUR", price: "0.86406074452358554" });
    const again = await connect.getRate({ base: "USD", quote: "EUR" });
    expect(again.rate).toMatchObject({ price: "0.86406074452358554", source: RateSource.CACHE });
    const asOf = again.rate?.asOf;
    expect(Math.abs(Number(asOf?.seconds) * 1000 - Date.now())).toBeLessThan(5_000);
    expect((await grpc.getRate({ base: "sats", quote: "SATS" })).rate?.price).toBe("1");
    expect((await grpc.getRate({ base: "SATS", quote: "USD" })).rate?.price).toBe("0.000930125");
  });

  it("fails NOT_FOUND naming an unknown code", async () => {
    const { connect, grpc } = await start();
    const err = await callError(connect.getRate({ base: "BTC", quote: "XYZ" }));
    expect(err.code).toBe(NOT_FOUND);
    expect(err.rawMessage).toBe("unknown currency XYZ");
    const [info] = err.findDetails(ErrorInfoSchema);
    expect(info).toMatchObject({ reason: "UNKNOWN_CURRENCY", metadata: { code: "XYZ" } });
    await expect(grpc.getRate({ base: "abc", quote: "usd" })).rejects.toMatchObject({
      kind: "not_found",
    });
  });

  it("fails FAILED_PRECONDITION for a price 18 fractional digits cannot carry", async () => {
    upstream.setValue("usd", "1e25");
    const { connect } = await start();
    const err = await callError(connect.getRate({ base: "btc", quote: "usd" }));
    expect(err.code).toBe(FAILED_PRECONDITION);
    expect(err.findDetails(ErrorInfoSchema)[0]).toMatchObject({
      reason: "PRICE_OUT_OF_RANGE",
      metadata: { base: "BTC", quote: "USD" },
    });
    // 1e-25 would round to 0: refused too, never served as a zero price.
    const tiny = await callError(connect.getRate({ base: "usd", quote: "btc" }));
    expect(tiny.code).toBe(FAILED_PRECONDITION);
  });

  it("fails INVALID_ARGUMENT listing every empty field", async () => {
    const { connect } = await start();
    const err = await callError(connect.getRate({ base: "", quote: "" }));
    expect(err.code).toBe(INVALID_ARGUMENT);
    const [bad] = err.findDetails(BadRequestSchema);
    expect(bad?.fieldViolations.map((v) => v.field)).toEqual(["base", "quote"]);
    expect(upstream.state.requests).toBe(0);
  });
});

describe("GetRates", () => {
  it("prices one base in many quotes, in request order", async () => {
    const { grpc } = await start();
    const { rates } = await grpc.getRates({ base: "eth", quotes: ["usd", "btc", "xau", "usd"] });
    expect(rates.map((r) => [r.quote, r.price])).toEqual([
      ["USD", "3049.590163934426229508"],
      ["BTC", "0.032786885245901639"],
      ["XAU", "1.150819672131147541"],
      ["USD", "3049.590163934426229508"],
    ]);
  });

  it("takes 1 to 100 quotes", async () => {
    const { connect, grpc } = await start();
    const hundred = await grpc.getRates({ base: "btc", quotes: Array(100).fill("usd") });
    expect(hundred.rates).toHaveLength(100);
    for (const quotes of [[], Array(101).fill("usd")]) {
      const err = await callError(connect.getRates({ base: "btc", quotes }));
      expect(err.code).toBe(INVALID_ARGUMENT);
      expect(err.findDetails(BadRequestSchema)[0]?.fieldViolations[0]?.field).toBe("quotes");
    }
  });

  it("names every unknown code at once", async () => {
    const { connect } = await start();
    const err = await callError(connect.getRates({ base: "qqq", quotes: ["usd", "zzz"] }));
    expect(err.code).toBe(NOT_FOUND);
    expect(err.findDetails(ErrorInfoSchema)[0]?.metadata).toEqual({ code: "QQQ,ZZZ" });
  });
});

describe("ListCurrencies", () => {
  it("lists code, name, unit and type in code order", async () => {
    const { grpc } = await start();
    const { currencies } = await grpc.listCurrencies({});
    expect(currencies.map((c) => c.code)).toEqual([
      "BITS",
      "BTC",
      "ETH",
      "EUR",
      "SATS",
      "USD",
      "XAU",
    ]);
    expect(currencies.find((c) => c.code === "XAU")).toMatchObject({
      name: "Gold - Troy Ounce",
      unit: "XAU",
      type: CurrencyType.COMMODITY,
    });
    expect(currencies.find((c) => c.code === "USD")?.type).toBe(CurrencyType.FIAT);
  });
});

describe("when the upstream fails", () => {
  const TTL = 60_000;
  const MAX_STALE = 300_000;

  it.each([
    ["HTTP 500", "error", "error"],
    ["429 with Retry-After", "rate_limited", "rate_limited"],
    ["a stall", "stall", "timeout"],
    ["garbage", "garbage", "invalid"],
  ] as const)("%s: serves the last known good, then the snapshot", async (_name, mode, outcome) => {
    const clock = createFakeClock();
    const server = await start({
      clock: clock.now,
      ttlMs: TTL,
      maxStalenessMs: MAX_STALE,
      allowSnapshot: true,
      upstreamTimeoutMs: 100,
    });
    upstream.setValue("usd", "95000");
    const fresh = (await server.grpc.getRate({ base: "btc", quote: "usd" })).rate;
    expect(fresh).toMatchObject({ price: "95000", source: RateSource.UPSTREAM, stale: false });

    upstream.state.mode = mode;
    clock.advance(TTL);
    const stale = (await server.grpc.getRate({ base: "btc", quote: "usd" })).rate;
    expect(stale).toMatchObject({ price: "95000", source: RateSource.CACHE, stale: true });
    expect(stale?.asOf).toEqual(fresh?.asOf);
    await server.cache.refresh();
    expect(
      await server.metric("coinmesh_rate_upstream_requests_total", { outcome }),
    ).toBeGreaterThan(0);

    clock.advance(MAX_STALE);
    const snapshot = (await server.grpc.getRate({ base: "btc", quote: "usd" })).rate;
    expect(snapshot).toMatchObject({ price: "93012.5", source: RateSource.SNAPSHOT, stale: true });
    expect(Number(snapshot?.asOf?.seconds) * 1000).toBe(SNAPSHOT_AS_OF.getTime());
  });

  it("fails UNAVAILABLE past the maximum staleness when the snapshot is not allowed", async () => {
    const clock = createFakeClock();
    const server = await start({ clock: clock.now, ttlMs: TTL, maxStalenessMs: MAX_STALE });
    await server.grpc.getRate({ base: "btc", quote: "usd" });
    upstream.state.mode = "error";
    clock.advance(MAX_STALE + 1_000);
    const err = await callError(server.connect.getRate({ base: "btc", quote: "usd" }));
    expect(err.code).toBe(UNAVAILABLE);
    expect(err.findDetails(ErrorInfoSchema)[0]).toMatchObject({
      reason: "RATES_TOO_OLD",
      metadata: { age_seconds: "301", max_staleness_seconds: "300" },
    });
    await expect(server.grpc.getRates({ base: "btc", quotes: ["eur"] })).rejects.toBeInstanceOf(
      AppError,
    );
    // Listing currencies does not depend on how old the prices are.
    expect((await server.grpc.listCurrencies({})).currencies.length).toBe(7);
  });

  it("fails UNAVAILABLE with nothing to serve, and stays offline from the upstream meanwhile", async () => {
    upstream.state.mode = "error";
    const server = await start();
    const err = await callError(server.connect.getRate({ base: "btc", quote: "usd" }));
    expect(err.code).toBe(UNAVAILABLE);
    expect(err.findDetails(ErrorInfoSchema)[0]?.reason).toBe("RATES_UNAVAILABLE");
    const requests = upstream.state.requests;
    await callError(server.connect.getRate({ base: "btc", quote: "usd" }));
    const list = await callError(server.connect.listCurrencies({}));
    expect(list.code).toBe(UNAVAILABLE);
    expect(upstream.state.requests).toBe(requests);
  });
});

describe("metrics", () => {
  it("counts upstream outcomes and cache results and reports the staleness", async () => {
    const clock = createFakeClock();
    const server = await start({ clock: clock.now, ttlMs: 60_000 });
    await server.grpc.getRate({ base: "btc", quote: "usd" });
    await server.grpc.getRate({ base: "btc", quote: "usd" });
    clock.advance(61_000);
    await server.grpc.getRate({ base: "btc", quote: "usd" });
    await server.cache.refresh();
    expect(await server.metric("coinmesh_rate_upstream_requests_total", { outcome: "ok" })).toBe(2);
    expect(await server.metric("coinmesh_rate_cache_requests_total", { result: "miss" })).toBe(1);
    expect(await server.metric("coinmesh_rate_cache_requests_total", { result: "hit" })).toBe(1);
    expect(await server.metric("coinmesh_rate_cache_requests_total", { result: "stale" })).toBe(1);
    clock.advance(2_500);
    expect(await server.metric("coinmesh_rate_staleness_seconds")).toBe(2.5);
    expect(await server.metric("coinmesh_rate_watch_streams")).toBe(0);
  });
});
