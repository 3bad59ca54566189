import { randomUUID } from "node:crypto";
import type { Logger } from "@coinmesh/lib/log";
import type { Redis } from "@coinmesh/lib/redis";
import type { SharedRates, StoredRates } from "./rates-cache.ts";
import { parseRatesPayload } from "./rates-payload.ts";

export interface RatesStoreDeps {
  redis: Redis;
  /** Tests use their own prefix so suites never share keys. */
  keyPrefix: string;
  /** How long the last known good rates are kept: well beyond the TTL and the max staleness. */
  retentionMs: number;
  /** Longest a refresh may hold the lock; past it a peer may refresh (the holder died). */
  lockTtlMs: number;
  log: Logger;
}

// Lua so only the holder's token deletes the lock, never a peer's newer lock.
const UNLOCK = `if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`;

/**
 * The last known good rates in Redis, shared by every replica, and the lock that lets one of
 * them refresh. Layout: `<prefix>` = "<fetched-at epoch ms>\n<upstream payload verbatim>"
 * (so values keep their exact text), `<prefix>:refresh-lock` = the holder's random token.
 * Every method fails soft: Redis is a cache, the caller carries on without it.
 */
export function createRatesStore(deps: RatesStoreDeps): SharedRates {
  const { redis, log } = deps;
  const key = deps.keyPrefix;
  const lockKey = `${deps.keyPrefix}:refresh-lock`;
  let token: string | undefined;
  let lastWarned = 0;
  const warn = (err: unknown, op: string) => {
    const now = Date.now();
    if (now - lastWarned < 10_000) return;
    lastWarned = now;
    log.warn(
      { err: (err as Error).message, op },
      "redis unavailable; serving from the in-process copy",
    );
  };

  return {
    async load() {
      let value: string | null;
      try {
        value = await redis.get(key);
      } catch (err) {
        warn(err, "load");
        return undefined;
      }
      if (value === null) return undefined;
      const newline = value.indexOf("\n");
      const fetchedAtMs = Number(value.slice(0, newline));
      const raw = value.slice(newline + 1);
      try {
        if (newline < 0 || !Number.isSafeInteger(fetchedAtMs))
          throw new Error("no fetched-at line");
        return { table: parseRatesPayload(raw), raw, fetchedAtMs } satisfies StoredRates;
      } catch (err) {
        log.error({ err: (err as Error).message, key }, "ignoring malformed rates in redis");
        return undefined;
      }
    },
    async save(rates) {
      try {
        await redis.set(key, `${rates.fetchedAtMs}\n${rates.raw}`, "PX", deps.retentionMs);
      } catch (err) {
        warn(err, "save");
      }
    },
    async tryLock() {
      const candidate = randomUUID();
      try {
        const ok = await redis.set(lockKey, candidate, "PX", deps.lockTtlMs, "NX");
        if (ok !== "OK") return "held";
        token = candidate;
        return "acquired";
      } catch (err) {
        warn(err, "lock");
        return "unavailable";
      }
    },
    async unlock() {
      const held = token;
      token = undefined;
      if (!held) return;
      try {
        await redis.eval(UNLOCK, 1, lockKey, held);
      } catch (err) {
        warn(err, "unlock");
      }
    },
  };
}
