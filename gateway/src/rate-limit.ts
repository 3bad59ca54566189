import type { Logger } from "@coinmesh/lib/log";
import type { Redis } from "@coinmesh/lib/redis";

export interface RateLimiter {
  /** Takes one token from the key's bucket; false when it is empty. */
  take(key: string): Promise<boolean>;
}

export interface RateLimitSettings {
  perSecond: number;
  burst: number;
}

// Buckets of callers gone quiet are dropped when the map grows past this.
const MAX_BUCKETS = 50_000;

/** A token bucket per key in this process's memory. */
export function createMemoryRateLimiter(
  { perSecond, burst }: RateLimitSettings,
  now: () => number = Date.now,
): RateLimiter & { takeNow(key: string): boolean } {
  const buckets = new Map<string, { tokens: number; at: number }>();
  const refill = (bucket: { tokens: number; at: number }, t: number) =>
    Math.min(burst, bucket.tokens + ((t - bucket.at) * perSecond) / 1000);

  function sweep(t: number) {
    for (const [key, bucket] of buckets) if (refill(bucket, t) >= burst) buckets.delete(key);
  }

  function takeNow(key: string): boolean {
    const t = now();
    let bucket = buckets.get(key);
    if (bucket === undefined) {
      if (buckets.size >= MAX_BUCKETS) sweep(t);
      bucket = { tokens: burst, at: t };
      buckets.set(key, bucket);
    }
    bucket.tokens = refill(bucket, t);
    bucket.at = t;
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }
  return { takeNow, take: async (key) => takeNow(key) };
}

// One round trip per call: refill by Redis's own clock (replicas' clocks need not agree),
// take a token if there is one, and let an idle bucket expire once it would be full again.
const TAKE_TOKEN = `
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return allowed
`;

type RedisWithTakeToken = Redis & {
  takeToken(key: string, perSecond: number, burst: number): Promise<number>;
};

/**
 * A token bucket per key shared by every gateway replica through Redis (one Lua script, sent
 * by EVALSHA). Redis is never worth failing a request for: when a call fails or times out,
 * that call is decided by this process's memory bucket instead, and the failure is logged at
 * most every errorLogIntervalMs.
 */
export function createRedisRateLimiter(
  settings: RateLimitSettings,
  deps: { redis: Redis; keyPrefix: string; log: Logger; errorLogIntervalMs?: number },
): RateLimiter {
  const { redis, keyPrefix, log } = deps;
  const fallback = createMemoryRateLimiter(settings);
  const logEvery = deps.errorLogIntervalMs ?? 10_000;
  let lastLogged = 0;
  let fallbacks = 0;
  if (!("takeToken" in redis)) {
    redis.defineCommand("takeToken", { numberOfKeys: 1, lua: TAKE_TOKEN });
  }
  const scripted = redis as RedisWithTakeToken;
  return {
    async take(key) {
      try {
        return (
          (await scripted.takeToken(keyPrefix + key, settings.perSecond, settings.burst)) === 1
        );
      } catch (err) {
        fallbacks++;
        if (Date.now() - lastLogged >= logEvery) {
          log.warn(
            { err: (err as Error).message, fallbacks },
            "rate limit: redis failed, using the in-memory bucket",
          );
          lastLogged = Date.now();
          fallbacks = 0;
        }
        return fallback.takeNow(key);
      }
    },
  };
}
