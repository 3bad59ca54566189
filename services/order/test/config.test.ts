import { ConfigError } from "@coinmesh/lib/config";
import { silentLogger } from "@coinmesh/lib/log";
import { expect, test } from "vitest";
import { readConfig } from "../src/config.ts";
import { startKeyCleanup } from "../src/key-cleanup.ts";

test("runs with no environment at all: embedded database, local neighbours", () => {
  const config = readConfig({});
  expect(config).toMatchObject({
    databaseUrl: undefined,
    port: 50052,
    metricsPort: 9462,
    userServiceAddress: "127.0.0.1:50051",
    rateServiceAddress: "127.0.0.1:50053",
    upstreamTimeoutMs: 2_000,
    idempotencyKeyTtlMs: 48 * 3_600_000,
    maxRateAgeMs: 120_000,
    allowSnapshotRates: true,
  });
  expect(config.maxAmount.toFixed()).toBe("1000000000000");
});

test("names every bad variable at once", () => {
  const read = () =>
    readConfig({
      ORDER_MAX_AMOUNT: "1e5",
      ORDER_IDEMPOTENCY_KEY_TTL_HOURS: "12",
      RATE_SERVICE_ADDR: "rate",
      DATABASE_URL: "mysql://x",
    });
  expect(read).toThrow(ConfigError);
  try {
    read();
  } catch (err) {
    expect((err as ConfigError).problems).toEqual([
      expect.stringContaining("ORDER_MAX_AMOUNT"),
      expect.stringContaining("DATABASE_URL"),
      expect.stringContaining("RATE_SERVICE_ADDR"),
      expect.stringContaining("ORDER_IDEMPOTENCY_KEY_TTL_HOURS"),
    ]);
  }
});

test("snapshot rates fill only on the embedded database unless configured; the age bound is set in seconds", () => {
  const real = "postgres://127.0.0.1/orders";
  expect(readConfig({ DATABASE_URL: real }).allowSnapshotRates).toBe(false);
  expect(
    readConfig({ DATABASE_URL: real, ORDER_ALLOW_SNAPSHOT_RATES: "true" }).allowSnapshotRates,
  ).toBe(true);
  expect(readConfig({ ORDER_MAX_RATE_AGE_SECONDS: "30" }).maxRateAgeMs).toBe(30_000);
  expect(() => readConfig({ ORDER_MAX_RATE_AGE_SECONDS: "0" })).toThrow(ConfigError);
  expect(() => readConfig({ ORDER_ALLOW_SNAPSHOT_RATES: "maybe" })).toThrow(ConfigError);
});

test("ORDER_MAX_AMOUNT must fit numeric(38, 18)", () => {
  expect(readConfig({ ORDER_MAX_AMOUNT: "500.25" }).maxAmount.toFixed()).toBe("500.25");
  expect(() => readConfig({ ORDER_MAX_AMOUNT: "100000000000000000000" })).toThrow(ConfigError);
  expect(() => readConfig({ ORDER_MAX_AMOUNT: "0" })).toThrow(ConfigError);
});

test("the key cleanup deletes keys older than the TTL on every interval until stopped", async () => {
  const cutoffs: Date[] = [];
  const now = new Date("2026-11-22T12:00:00Z");
  const stop = startKeyCleanup({
    keys: {
      async deleteKeysBefore(before) {
        cutoffs.push(before);
        return 3;
      },
    },
    ttlMs: 48 * 3_600_000,
    intervalMs: 20,
    clock: () => now,
    log: silentLogger(),
  });
  await new Promise((resolve) => setTimeout(resolve, 70));
  await stop();
  const runs = cutoffs.length;
  expect(runs).toBeGreaterThanOrEqual(2);
  expect(cutoffs[0]).toEqual(new Date("2026-11-20T12:00:00Z"));
  await new Promise((resolve) => setTimeout(resolve, 50));
  expect(cutoffs.length).toBe(runs);
});
