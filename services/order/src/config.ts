import { type CommonConfig, createEnvReader, readCommonConfig } from "@coinmesh/lib/config";
import { Decimal, isStorableMax } from "./amounts.ts";

export interface OrderConfig extends CommonConfig {
  databaseUrl: string | undefined;
  userServiceAddress: string;
  rateServiceAddress: string;
  /** The largest amount, quantity or notional of one request. */
  maxAmount: Decimal;
  /** Cap on every call to the user and rate services (the caller's deadline may be shorter). */
  upstreamTimeoutMs: number;
  /** How long the currency list from the rate service is used before it is fetched again. */
  currencyCacheMs: number;
  /** How many known user ids to remember. */
  userCacheSize: number;
  /** Idempotency keys are kept this long (at least 24 h), then deleted. */
  idempotencyKeyTtlMs: number;
  keyCleanupIntervalMs: number;
  databasePoolSize: number;
  /** Orders refuse a price older than this (its `as_of`), whatever the rate service allows. */
  maxRateAgeMs: number;
  /** Whether orders fill at the rate service's bundled snapshot (the embedded default only). */
  allowSnapshotRates: boolean;
}

const HOUR = 3_600_000;

export function readConfig(env: Record<string, string | undefined>): OrderConfig {
  const read = createEnvReader(env);
  const rawMax = read.string("ORDER_MAX_AMOUNT", "1000000000000");
  let maxAmount = new Decimal("1e12");
  if (/^\d+(\.\d+)?$/.test(rawMax) && isStorableMax(new Decimal(rawMax))) {
    maxAmount = new Decimal(rawMax);
  } else {
    read.problem(
      `ORDER_MAX_AMOUNT=${JSON.stringify(rawMax)} must be a positive decimal below 1e20 with at most 18 fractional digits`,
    );
  }
  const databaseUrl = read.url("DATABASE_URL", ["postgres:", "postgresql:"]);
  const config = {
    ...readCommonConfig(read, { port: 50052, metricsPort: 9462 }),
    databaseUrl,
    userServiceAddress: read.address("USER_SERVICE_ADDR", "127.0.0.1:50051"),
    rateServiceAddress: read.address("RATE_SERVICE_ADDR", "127.0.0.1:50053"),
    maxAmount,
    upstreamTimeoutMs: read.int("ORDER_UPSTREAM_TIMEOUT_MS", 2_000, 1, 60_000),
    currencyCacheMs: read.int("ORDER_CURRENCY_CACHE_MS", 300_000, 0, 86_400_000),
    userCacheSize: read.int("ORDER_USER_CACHE_SIZE", 100_000, 1, 10_000_000),
    idempotencyKeyTtlMs: read.int("ORDER_IDEMPOTENCY_KEY_TTL_HOURS", 48, 24, 24 * 365) * HOUR,
    keyCleanupIntervalMs: read.int("ORDER_KEY_CLEANUP_INTERVAL_MS", HOUR, 1_000, 24 * HOUR),
    databasePoolSize: read.int("DATABASE_POOL_SIZE", 20, 1, 1_000),
    maxRateAgeMs: read.int("ORDER_MAX_RATE_AGE_SECONDS", 120, 1, 86_400) * 1_000,
    allowSnapshotRates: read.bool("ORDER_ALLOW_SNAPSHOT_RATES", databaseUrl === undefined),
  };
  read.done();
  return config;
}
