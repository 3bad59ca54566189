import type { Logger } from "@coinmesh/lib/log";
import type { FetchedRates, RatesUpstream } from "./rates-cache.ts";
import { InvalidRatesPayload, parseRatesPayload } from "./rates-payload.ts";

export const UPSTREAM_OUTCOMES = ["ok", "error", "timeout", "rate_limited", "invalid"] as const;
export type UpstreamOutcome = (typeof UPSTREAM_OUTCOMES)[number];

/** A failed fetch; retryAfterMs is how long the upstream asked us to stay away, if it did. */
export class UpstreamFailure extends Error {
  readonly outcome: Exclude<UpstreamOutcome, "ok">;
  readonly retryAfterMs: number | undefined;
  constructor(outcome: Exclude<UpstreamOutcome, "ok">, message: string, retryAfterMs?: number) {
    super(message);
    this.name = "UpstreamFailure";
    this.outcome = outcome;
    this.retryAfterMs = retryAfterMs;
  }
}

export interface UpstreamDeps {
  /** e.g. https://api.coingecko.com; the path /api/v3/exchange_rates is appended. */
  baseUrl: string;
  apiKey?: string;
  apiKeyHeader: string;
  /** Per attempt, covering the response body too. */
  timeoutMs: number;
  /** Attempts per fetch, first included. */
  attempts?: number;
  /** Base and cap of the full-jitter exponential backoff between attempts. */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** A 429 asking for a longer wait ends the fetch instead of sleeping through it. */
  maxRetryAfterWaitMs?: number;
  clock: () => number;
  random?: () => number;
  metrics: { upstreamRequest: Record<UpstreamOutcome, () => void> };
  log: Logger;
}

const MAX_BODY_CHARS = 2 * 1024 * 1024;
// Beyond this a Retry-After is more likely a bug than a plan.
const MAX_RETRY_AFTER_MS = 3_600_000;

/** Retry-After as delta-seconds or an HTTP date, in ms from now. */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  const ms = /^\d+$/.test(trimmed) ? Number(trimmed) * 1000 : Date.parse(trimmed) - now;
  return Number.isFinite(ms) ? Math.min(Math.max(ms, 0), MAX_RETRY_AFTER_MS) : undefined;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A client of a CoinGecko-compatible `/api/v3/exchange_rates`: a timeout per attempt, retries
 * with full-jitter backoff on errors, timeouts and 429 (honouring Retry-After, also across
 * fetches), no retry of a malformed payload (the upstream answered; it would answer the same).
 */
export function createUpstreamClient(deps: UpstreamDeps): RatesUpstream {
  const url = `${deps.baseUrl.replace(/\/+$/, "")}/api/v3/exchange_rates`;
  const headers: Record<string, string> = { accept: "application/json" };
  if (deps.apiKey) headers[deps.apiKeyHeader] = deps.apiKey;
  const attempts = deps.attempts ?? 3;
  const backoffMs = deps.backoffMs ?? 200;
  const maxBackoffMs = deps.maxBackoffMs ?? 2_000;
  const maxRetryAfterWaitMs = deps.maxRetryAfterWaitMs ?? 2_000;
  const random = deps.random ?? Math.random;
  const count = deps.metrics.upstreamRequest;
  let notBefore = 0;

  async function attempt(): Promise<FetchedRates> {
    let response: Response;
    let raw: string;
    try {
      response = await fetch(url, { headers, signal: AbortSignal.timeout(deps.timeoutMs) });
      raw = await response.text();
    } catch (err) {
      const error = err as Error;
      if (error.name === "TimeoutError") {
        count.timeout();
        throw new UpstreamFailure("timeout", `no answer within ${deps.timeoutMs}ms`);
      }
      count.error();
      const cause = (error.cause as { code?: string } | undefined)?.code;
      throw new UpstreamFailure("error", `${error.message}${cause ? ` (${cause})` : ""}`);
    }
    if (response.status === 429) {
      count.rate_limited();
      const retryAfterMs = parseRetryAfter(response.headers.get("retry-after"), deps.clock());
      throw new UpstreamFailure("rate_limited", "HTTP 429", retryAfterMs);
    }
    if (response.status !== 200) {
      count.error();
      throw new UpstreamFailure("error", `HTTP ${response.status}`);
    }
    try {
      if (raw.length > MAX_BODY_CHARS)
        throw new InvalidRatesPayload(`body over ${MAX_BODY_CHARS} characters`);
      const table = parseRatesPayload(raw);
      count.ok();
      return { table, raw };
    } catch (err) {
      if (!(err instanceof InvalidRatesPayload)) throw err;
      count.invalid();
      deps.log.error(
        { reason: err.message, url, bytes: raw.length },
        "upstream sent a malformed rates payload; rejected whole, not cached",
      );
      throw new UpstreamFailure("invalid", `malformed payload: ${err.message}`);
    }
  }

  return {
    async fetchRates() {
      const wait = notBefore - deps.clock();
      if (wait > 0) {
        throw new UpstreamFailure("rate_limited", `upstream asked to wait ${wait}ms more`, wait);
      }
      for (let n = 1; ; n++) {
        try {
          return await attempt();
        } catch (err) {
          if (!(err instanceof UpstreamFailure)) throw err;
          if (err.retryAfterMs !== undefined) notBefore = deps.clock() + err.retryAfterMs;
          const retryable = err.outcome !== "invalid" && n < attempts;
          const jitter = random() * Math.min(maxBackoffMs, backoffMs * 2 ** (n - 1));
          const delay = Math.max(jitter, err.retryAfterMs ?? 0);
          if (!retryable || delay > maxRetryAfterWaitMs) throw err;
          await sleep(delay);
        }
      }
    },
  };
}
