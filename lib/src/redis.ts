import { Redis } from "ioredis";
import type { Logger } from "./log.ts";

export type { Redis };

export interface RedisOptions {
  /** Longest any one command may take; Redis is a cache here, never worth waiting for. */
  commandTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** Cap of the reconnect backoff. */
  maxReconnectDelayMs?: number;
  /** At most one error line per this period, so a dead Redis does not flood the logs. */
  errorLogIntervalMs?: number;
}

/**
 * A Redis client that fails fast instead of hanging: no offline queue (commands fail at once
 * while disconnected), one retry per request, a timeout on every command and on connecting,
 * and endless reconnects with capped exponential backoff. Errors are logged, rate-limited;
 * callers treat every failure as "Redis is not there right now".
 */
export function createRedis(url: string, log: Logger, options: RedisOptions = {}): Redis {
  const maxDelay = options.maxReconnectDelayMs ?? 2_000;
  const logEvery = options.errorLogIntervalMs ?? 10_000;
  const redis = new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: options.commandTimeoutMs ?? 150,
    connectTimeout: options.connectTimeoutMs ?? 1_000,
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 10), maxDelay),
    // A reconnect must not replay commands that already timed out for their callers.
    autoResendUnfulfilledCommands: false,
  });
  let lastLogged = 0;
  let suppressed = 0;
  redis.on("error", (err: Error) => {
    const now = Date.now();
    if (now - lastLogged < logEvery) {
      suppressed++;
      return;
    }
    log.warn({ err: err.message, suppressed }, "redis error");
    lastLogged = now;
    suppressed = 0;
  });
  redis.on("ready", () => log.info("redis ready"));
  return redis;
}

/**
 * Waits until the client is ready, at most timeoutMs; true if it is. Commands fail at once
 * until then (no offline queue), so a process that coordinates through Redis waits here at
 * start instead of acting alone; a Redis that stays away only delays the start.
 */
export function whenRedisReady(redis: Redis, timeoutMs: number): Promise<boolean> {
  if (redis.status === "ready") return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (ready: boolean) => {
      clearTimeout(timer);
      redis.off("ready", onReady);
      resolve(ready);
    };
    const onReady = () => done(true);
    const timer = setTimeout(() => done(false), timeoutMs);
    redis.on("ready", onReady);
  });
}
