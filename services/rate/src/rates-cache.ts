import { AppError } from "@coinmesh/lib/errors";
import type { Logger } from "@coinmesh/lib/log";
import type { RatesTable } from "./rates-payload.ts";
import { makeVersion, type RatesVersion, type RatesView } from "./rates-version.ts";

/** A successful upstream response. */
export interface FetchedRates {
  table: RatesTable;
  raw: string;
}

/** The upstream rates API; throws when it fails, with a delay to respect before asking again. */
export interface RatesUpstream {
  fetchRates(): Promise<FetchedRates>;
}

export interface StoredRates extends FetchedRates {
  fetchedAtMs: number;
}

/** The last known good rates shared by replicas (Redis); every method fails soft. */
export interface SharedRates {
  load(): Promise<StoredRates | undefined>;
  save(rates: StoredRates): Promise<void>;
  /** "unavailable" when Redis cannot say: the caller refreshes on its own then. */
  tryLock(): Promise<"acquired" | "held" | "unavailable">;
  unlock(): Promise<void>;
}

export interface RatesCacheDeps {
  upstream: RatesUpstream;
  shared?: SharedRates;
  /** Present only when serving the bundled snapshot is allowed. */
  snapshot?: { table: RatesTable; raw: string; asOf: Date };
  /** Epoch milliseconds. */
  clock: () => number;
  ttlMs: number;
  maxStalenessMs: number;
  /** Wait after a failed refresh before asking the upstream again (unless it said longer). */
  retryDelayMs: number;
  /** How long a replica with nothing to serve waits for a peer's refresh before fetching itself. */
  peerWaitMs: number;
  metrics: { cacheRequest: Record<"hit" | "stale" | "miss", () => void> };
  log: Logger;
}

export interface RatesCache {
  /**
   * The rates to serve now. Fresh or stale-but-usable rates come back at once (a stale read
   * starts a background refresh); otherwise the caller waits for a refresh, bounded by signal.
   * Throws AppError unavailable when nothing usable remains.
   */
  read(signal?: AbortSignal): RatesView | Promise<RatesView>;
  /** Like read, but rates past the maximum staleness still count (for listing currencies). */
  readAnyAge(signal?: AbortSignal): RatesView | Promise<RatesView>;
  /** Refreshes now unless a refresh is already running (then joins it). */
  refresh(): Promise<void>;
  /** Starts a refresh if the rates are past the TTL and no back-off applies. */
  refreshIfDue(): void;
  /** Called after every refresh attempt, successful or not. */
  onRefresh(listener: () => void): () => void;
  /** Age in seconds of the rates being served, for the staleness gauge. */
  ageSeconds(): number | undefined;
}

function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  const reason = () =>
    signal.reason instanceof AppError ? signal.reason : new AppError("cancelled", "call cancelled");
  if (signal.aborted) return Promise.reject(reason());
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(reason());
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}

const PEER_POLL_MS = 50;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function createRatesCache(deps: RatesCacheDeps): RatesCache {
  const { clock, ttlMs, maxStalenessMs, shared, log } = deps;
  const { hit, stale, miss } = deps.metrics.cacheRequest;
  const snapshot = deps.snapshot
    ? makeVersion(deps.snapshot, deps.snapshot.asOf.getTime(), "snapshot")
    : undefined;
  let current: RatesVersion | undefined;
  let inflight: Promise<RatesVersion | undefined> | undefined;
  let nextAttemptAt = 0;
  /** The last refresh failed: with nothing else to serve, the snapshot is served without waiting. */
  let offline = false;
  const listeners = new Set<() => void>();

  function install(version: RatesVersion): RatesVersion {
    current = version;
    return version;
  }

  /** What can be served at `now` without waiting, or an AppError saying why nothing can. */
  function usable(now: number, anyAge = false): RatesView | AppError {
    if (current) {
      const age = now - current.asOfMs;
      if (age < ttlMs) return current.views.fresh;
      if (age <= maxStalenessMs || anyAge) return current.views.stale;
    }
    if (snapshot) return snapshot.views.stale;
    if (!current) {
      return new AppError("unavailable", "no rates yet: the upstream rates API is unreachable", {
        reason: "RATES_UNAVAILABLE",
      });
    }
    const ageSeconds = Math.floor((now - current.asOfMs) / 1000);
    return new AppError(
      "unavailable",
      `rates are ${ageSeconds}s old, beyond the ${maxStalenessMs / 1000}s limit; the upstream rates API is unreachable`,
      {
        reason: "RATES_TOO_OLD",
        metadata: {
          age_seconds: String(ageSeconds),
          max_staleness_seconds: String(maxStalenessMs / 1000),
        },
      },
    );
  }

  /** Takes a newer copy a peer stored in Redis, if there is one. */
  async function adoptShared(): Promise<RatesVersion | undefined> {
    const stored = await shared?.load();
    if (!stored || (current && stored.fetchedAtMs <= current.asOfMs)) return undefined;
    return install(makeVersion(stored, stored.fetchedAtMs, "shared"));
  }

  async function waitForPeer(): Promise<RatesVersion | undefined> {
    // Counted in polls, not clock time: the clock may be a test's, frozen.
    for (let polls = Math.ceil(deps.peerWaitMs / PEER_POLL_MS); polls > 0; polls--) {
      await sleep(PEER_POLL_MS);
      const adopted = await adoptShared();
      if (adopted) return adopted;
    }
    return undefined;
  }

  async function fetchUpstream(): Promise<RatesVersion | undefined> {
    try {
      const fetched = await deps.upstream.fetchRates();
      const version = install(makeVersion(fetched, clock(), "upstream"));
      nextAttemptAt = version.asOfMs + ttlMs;
      offline = false;
      await shared?.save({ ...fetched, fetchedAtMs: version.asOfMs });
      return version;
    } catch (err) {
      const retryAfterMs = (err as { retryAfterMs?: number }).retryAfterMs ?? 0;
      nextAttemptAt = clock() + Math.max(deps.retryDelayMs, retryAfterMs);
      offline = true;
      log.warn(
        {
          err: (err as Error).message,
          retryInMs: nextAttemptAt - clock(),
          serving: current ? "last known good" : snapshot ? "snapshot" : "nothing",
        },
        "rates refresh failed",
      );
      return undefined;
    }
  }

  async function runRefresh(): Promise<RatesVersion | undefined> {
    if (!shared) return fetchUpstream();
    const adopted = await adoptShared();
    if (adopted && clock() - adopted.asOfMs < ttlMs) {
      nextAttemptAt = adopted.asOfMs + ttlMs;
      return adopted;
    }
    const lock = await shared.tryLock();
    if (lock === "held") {
      // A peer is asking the upstream; serve what we have and pick up its result soon.
      const hasUsable = current && clock() - current.asOfMs <= maxStalenessMs;
      const fromPeer = hasUsable ? undefined : await waitForPeer();
      if (fromPeer || hasUsable) {
        // The peer's rates last their TTL; without them, look again for its result soon.
        nextAttemptAt = fromPeer ? fromPeer.asOfMs + ttlMs : clock() + Math.min(ttlMs, 1_000);
        return fromPeer;
      }
      return fetchUpstream();
    }
    try {
      return await fetchUpstream();
    } finally {
      if (lock === "acquired") await shared.unlock();
    }
  }

  function startRefresh(): Promise<RatesVersion | undefined> {
    if (inflight) return inflight;
    const run = runRefresh().then(
      (version) => version,
      (err: unknown) => {
        log.error({ err }, "rates refresh crashed");
        nextAttemptAt = clock() + deps.retryDelayMs;
        return undefined;
      },
    );
    inflight = run.finally(() => {
      inflight = undefined;
      for (const listener of listeners) listener();
    });
    return inflight;
  }

  async function waitForRates(signal: AbortSignal | undefined, anyAge = false): Promise<RatesView> {
    const attempt = inflight ?? (clock() >= nextAttemptAt ? startRefresh() : undefined);
    const fetched = attempt ? await abortable(attempt, signal) : undefined;
    if (fetched?.origin === "upstream" && fetched === current && clock() - fetched.asOfMs < ttlMs) {
      return fetched.views.upstream;
    }
    const view = usable(clock(), anyAge);
    if (view instanceof AppError) throw view;
    return view;
  }

  function refreshIfDue(): void {
    if (!inflight && clock() >= nextAttemptAt) void startRefresh();
  }

  return {
    read(signal) {
      const now = clock();
      const version = current;
      if (version) {
        const age = now - version.asOfMs;
        if (age < ttlMs) {
          hit();
          return version.views.fresh;
        }
        if (age <= maxStalenessMs) {
          stale();
          refreshIfDue();
          return version.views.stale;
        }
      }
      if (snapshot && (version || offline)) {
        // Known to be offline: the snapshot now, another try in the background.
        stale();
        refreshIfDue();
        return snapshot.views.stale;
      }
      miss();
      return waitForRates(signal);
    },
    readAnyAge(signal) {
      const view = usable(clock(), true);
      if (!(view instanceof AppError) && (view.version !== snapshot || offline)) {
        refreshIfDue();
        return view;
      }
      return waitForRates(signal, true);
    },
    async refresh() {
      await startRefresh();
    },
    refreshIfDue,
    onRefresh(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    ageSeconds() {
      const view = usable(clock());
      const served = view instanceof AppError ? current : view.version;
      return served ? (clock() - served.asOfMs) / 1000 : undefined;
    },
  };
}
