import { ConfigError } from "@coinmesh/lib/config";
import { describe, expect, it } from "vitest";
import { readConfig } from "../src/config.ts";

describe("readConfig", () => {
  it("runs with no environment at all: offline, in-process cache, snapshot allowed", () => {
    expect(readConfig({})).toMatchObject({
      host: "127.0.0.1",
      port: 50053,
      metricsPort: 9463,
      upstreamUrl: "https://api.coingecko.com",
      upstreamApiKey: undefined,
      upstreamApiKeyHeader: "x-cg-demo-api-key",
      upstreamTimeoutMs: 3_000,
      ttlMs: 60_000,
      maxStalenessMs: 900_000,
      allowSnapshot: true,
      redisUrl: undefined,
    });
  });

  it("does not allow the snapshot with Redis unless asked to", () => {
    expect(readConfig({ REDIS_URL: "redis://r:6379" }).allowSnapshot).toBe(false);
    expect(
      readConfig({ REDIS_URL: "redis://r:6379", RATES_ALLOW_SNAPSHOT: "true" }).allowSnapshot,
    ).toBe(true);
    expect(readConfig({ RATES_ALLOW_SNAPSHOT: "false" }).allowSnapshot).toBe(false);
  });

  it("names every bad variable at once", () => {
    const read = () =>
      readConfig({
        RATES_UPSTREAM_URL: "ftp://x",
        RATES_TTL_SECONDS: "0",
        RATES_UPSTREAM_TIMEOUT_MS: "soon",
        REDIS_URL: "http://r",
      });
    expect(read).toThrow(ConfigError);
    try {
      read();
    } catch (err) {
      expect((err as ConfigError).problems).toHaveLength(4);
    }
    expect(() =>
      readConfig({ RATES_TTL_SECONDS: "120", RATES_MAX_STALENESS_SECONDS: "60" }),
    ).toThrow(/RATES_MAX_STALENESS_SECONDS must be at least RATES_TTL_SECONDS/);
  });
});
