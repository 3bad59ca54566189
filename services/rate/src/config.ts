import { type CommonConfig, createEnvReader, readCommonConfig } from "@coinmesh/lib/config";

export interface RateConfig extends CommonConfig {
  upstreamUrl: string;
  upstreamApiKey: string | undefined;
  upstreamApiKeyHeader: string;
  upstreamTimeoutMs: number;
  ttlMs: number;
  maxStalenessMs: number;
  /** Serve the bundled snapshot when nothing newer is usable. */
  allowSnapshot: boolean;
  redisUrl: string | undefined;
  /** Redis key of the shared last known good; replicas of one deployment share it. */
  redisKey: string;
}

export function readConfig(env: Record<string, string | undefined>): RateConfig {
  const read = createEnvReader(env);
  const redisUrl = read.url("REDIS_URL", ["redis:", "rediss:"]);
  const config: RateConfig = {
    ...readCommonConfig(read, { port: 50053, metricsPort: 9463 }),
    upstreamUrl: read.url("RATES_UPSTREAM_URL", ["http:", "https:"]) ?? "https://api.coingecko.com",
    upstreamApiKey: read.optionalString("RATES_UPSTREAM_API_KEY"),
    upstreamApiKeyHeader: read.string("RATES_UPSTREAM_API_KEY_HEADER", "x-cg-demo-api-key"),
    upstreamTimeoutMs: read.int("RATES_UPSTREAM_TIMEOUT_MS", 3_000, 1, 60_000),
    ttlMs: read.int("RATES_TTL_SECONDS", 60, 1, 86_400) * 1000,
    maxStalenessMs: read.int("RATES_MAX_STALENESS_SECONDS", 900, 1, 30 * 86_400) * 1000,
    // The zero-config embedded default (no Redis) runs offline on the snapshot; a deployment
    // with Redis must opt in, so the order service never fills on bundled prices by accident.
    allowSnapshot: read.bool("RATES_ALLOW_SNAPSHOT", redisUrl === undefined),
    redisUrl,
    redisKey: read.string("RATES_REDIS_KEY", "coinmesh:rates:v1"),
  };
  if (config.maxStalenessMs < config.ttlMs) {
    read.problem("RATES_MAX_STALENESS_SECONDS must be at least RATES_TTL_SECONDS");
  }
  read.done();
  return config;
}
