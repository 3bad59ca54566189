import { serve, startGrpcServer } from "@coinmesh/lib/grpc-server";
import { createMetrics, startMetricsServer } from "@coinmesh/lib/metrics";
import { createRedis } from "@coinmesh/lib/redis";
import { runMain } from "@coinmesh/lib/runtime";
import { RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { readConfig } from "./config.ts";
import { createRateMetrics } from "./rate-metrics.ts";
import { createRates } from "./rates.ts";
import { createRatesCache } from "./rates-cache.ts";
import { createRatesStore } from "./rates-store.ts";
import { rateHandlers } from "./server.ts";
import { loadSnapshot } from "./snapshot.ts";
import { createUpstreamClient } from "./upstream.ts";
import { createRateWatch } from "./watch.ts";

const DAY_MS = 86_400_000;

runMain("rate", async (log) => {
  const config = readConfig(process.env);
  const metrics = createMetrics();
  const rateMetrics = createRateMetrics(metrics.registry);
  const metricsServer = await startMetricsServer(
    metrics.registry,
    config.host,
    config.metricsPort,
    log,
  );
  const clock = () => Date.now();
  const redis = config.redisUrl ? createRedis(config.redisUrl, log) : undefined;
  // One refresh: up to 3 attempts plus their backoff.
  const refreshBudgetMs = 3 * config.upstreamTimeoutMs + 4_000;
  const cache = createRatesCache({
    upstream: createUpstreamClient({
      baseUrl: config.upstreamUrl,
      apiKey: config.upstreamApiKey,
      apiKeyHeader: config.upstreamApiKeyHeader,
      timeoutMs: config.upstreamTimeoutMs,
      clock,
      metrics: rateMetrics,
      log,
    }),
    shared: redis
      ? createRatesStore({
          redis,
          keyPrefix: "coinmesh:rates:v1",
          retentionMs: 7 * DAY_MS,
          lockTtlMs: refreshBudgetMs,
          log,
        })
      : undefined,
    snapshot: config.allowSnapshot ? await loadSnapshot() : undefined,
    clock,
    ttlMs: config.ttlMs,
    maxStalenessMs: config.maxStalenessMs,
    retryDelayMs: Math.min(config.ttlMs, 5_000),
    peerWaitMs: refreshBudgetMs,
    metrics: rateMetrics,
    log,
  });
  rateMetrics.observeStaleness(cache.ageSeconds);
  const rates = createRates({ cache });
  const watch = createRateWatch({
    rates,
    cache,
    tickMs: Math.min(config.ttlMs, 1_000),
    metrics: rateMetrics,
    log,
  });
  const server = await startGrpcServer({
    host: config.host,
    port: config.port,
    log,
    observer: metrics.server,
    services: [serve(RateService, rateHandlers(rates, watch))],
  });
  // Warm up in the background: early calls join this refresh instead of starting their own.
  void cache.refresh();
  server.setServing();
  log.info(
    {
      port: server.port,
      metricsPort: metricsServer.port,
      upstream: config.upstreamUrl,
      redis: Boolean(redis),
      allowSnapshot: config.allowSnapshot,
    },
    "rate service SERVING",
  );
  return async () => {
    await server.shutdown(config.shutdownGraceMs);
    watch.close();
    await Promise.all([redis?.quit().catch(() => redis.disconnect()), metricsServer.close()]);
  };
});
