import { labelledCounter, observedGauge, upDownGauge } from "@coinmesh/lib/app-metrics";
import type { Metrics } from "@coinmesh/lib/metrics";
import { UPSTREAM_OUTCOMES } from "./upstream.ts";

/** The rate service's own metrics; names are fixed, monitoring rules and dashboards use them. */
export function createRateMetrics(registry: Metrics["registry"]) {
  return {
    upstreamRequest: labelledCounter(registry, {
      name: "coinmesh_rate_upstream_requests_total",
      help: "HTTP requests to the upstream rates API, by outcome.",
      label: "outcome",
      values: UPSTREAM_OUTCOMES,
    }),
    cacheRequest: labelledCounter(registry, {
      name: "coinmesh_rate_cache_requests_total",
      help: "Reads of the rates cache: hit (fresh), stale (served while refreshing), miss (waited).",
      label: "result",
      values: ["hit", "stale", "miss"] as const,
    }),
    watchStreams: upDownGauge(registry, {
      name: "coinmesh_rate_watch_streams",
      help: "Open WatchRates streams.",
    }),
    /** Reports the age of the served rates at each scrape. */
    observeStaleness(ageSeconds: () => number | undefined) {
      observedGauge(registry, {
        name: "coinmesh_rate_staleness_seconds",
        help: "Age in seconds of the rates currently served (as_of to now).",
        read: ageSeconds,
      });
    },
  };
}

export type RateMetrics = ReturnType<typeof createRateMetrics>;
