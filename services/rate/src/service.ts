import type { Logger } from "@coinmesh/lib/log";
import type { Metrics } from "@coinmesh/lib/metrics";
import type { Redis } from "@coinmesh/lib/redis";
import type { RateConfig } from "./config.ts";
import { createRateMetrics } from "./rate-metrics.ts";
import { createRates } from "./rates.ts";
import { createRatesCache } from "./rates-cache.ts";
import { createRatesStore } from "./rates-store.ts";
import { rateHandlers } from "./server.ts";
import { loadSnapshot } from "./snapshot.ts";
import { createUpstreamClient } from "./upstream.ts";
import { createRateWatch } from "./watch.ts";

const DAY_MS = 86_400_000;

export type RateServiceSettings = Pick<
  RateConfig,
  | "upstreamUrl"
  | "upstreamApiKey"
  | "upstreamApiKeyHeader"
  | "upstreamTimeoutMs"
  | "ttlMs"
  | "maxStalenessMs"
  | "allowSnapshot"
>;

export interface RateServiceDeps {
  settings: RateServiceSettings;
  redis: Redis | undefined;
  registry: Metrics["registry"];
  log: Logger;
  /** Epoch milliseconds. */
  clock: () => number;
  /** Redis keys start with it; tests pass their own. */
  keyPrefix?: string;
  /** Upstream retry tuning, for tests that cannot wait. */
  upstreamBackoffMs?: number;
  retryDelayMs?: number;
}

/** Wires the rate service: upstream client, cache (Redis or not), pricing, fan-out, handlers. */
export async function createRateService(deps: RateServiceDeps) {
  const { settings, redis, log, clock } = deps;
  const metrics = createRateMetrics(deps.registry);
  // One refresh: up to 3 attempts and the backoff between them.
  const refreshBudgetMs = 3 * settings.upstreamTimeoutMs + 4_000;
  const cache = createRatesCache({
    upstream: createUpstreamClient({
      baseUrl: settings.upstreamUrl,
      apiKey: settings.upstreamApiKey,
      apiKeyHeader: settings.upstreamApiKeyHeader,
      timeoutMs: settings.upstreamTimeoutMs,
      backoffMs: deps.upstreamBackoffMs,
      clock,
      metrics,
      log,
    }),
    shared: redis
      ? createRatesStore({
          redis,
          keyPrefix: deps.keyPrefix ?? "coinmesh:rates:v1",
          retentionMs: 7 * DAY_MS,
          lockTtlMs: refreshBudgetMs,
          log,
        })
      : undefined,
    snapshot: settings.allowSnapshot ? await loadSnapshot() : undefined,
    clock,
    ttlMs: settings.ttlMs,
    maxStalenessMs: settings.maxStalenessMs,
    retryDelayMs: deps.retryDelayMs ?? Math.min(settings.ttlMs, 5_000),
    peerWaitMs: refreshBudgetMs,
    metrics,
    log,
  });
  metrics.observeStaleness(cache.ageSeconds);
  const rates = createRates({ cache });
  const watch = createRateWatch({
    rates,
    cache,
    tickMs: Math.min(settings.ttlMs, 1_000),
    metrics,
    log,
  });
  return { cache, rates, watch, handlers: rateHandlers(rates, watch) };
}
