import type { Logger } from "@coinmesh/lib/log";
import type { Rate, Rates } from "./rates.ts";
import type { RatesCache } from "./rates-cache.ts";

export interface RateWatchDeps {
  rates: Pick<Rates, "validate" | "current">;
  cache: Pick<RatesCache, "refreshIfDue" | "onRefresh">;
  /** How often the shared loop checks whether the rates are due a refresh. */
  tickMs: number;
  metrics: { watchStreams: { inc(): void; dec(): void } };
  log: Logger;
}

/**
 * What a subscriber is owed: only a flag. Whatever changed is worked out when the stream is
 * ready to send (latest prices against the last ones it sent), so a slow client costs one flag
 * and one list of prices however many refreshes it misses.
 */
interface Subscriber {
  dirty: boolean;
  wake: (() => void) | undefined;
}

/**
 * WatchRates fan-out: one refresh loop per process, started with the first subscriber and
 * stopped with the last, and one flag per subscriber set after every refresh.
 */
export function createRateWatch(deps: RateWatchDeps) {
  const subscribers = new Set<Subscriber>();
  let timer: NodeJS.Timeout | undefined;
  let stopListening: (() => void) | undefined;
  let closed = false;

  function notifyAll() {
    for (const subscriber of subscribers) {
      subscriber.dirty = true;
      const wake = subscriber.wake;
      subscriber.wake = undefined;
      wake?.();
    }
  }

  function startLoop() {
    if (timer) return;
    stopListening = deps.cache.onRefresh(notifyAll);
    timer = setInterval(() => deps.cache.refreshIfDue(), deps.tickMs);
    timer.unref();
  }

  function stopLoop() {
    clearInterval(timer);
    timer = undefined;
    stopListening?.();
    stopListening = undefined;
  }

  async function* watch(
    base: string,
    quotes: string[],
    signal: AbortSignal,
  ): AsyncGenerator<Rate[], void, undefined> {
    const request = deps.rates.validate(base, quotes);
    if (closed) return;
    const subscriber: Subscriber = { dirty: false, wake: undefined };
    const onAbort = () => subscriber.wake?.();
    signal.addEventListener("abort", onAbort, { once: true });
    subscribers.add(subscriber);
    deps.metrics.watchStreams.inc();
    startLoop();
    try {
      const first = await deps.rates.current(request.base, request.quotes, signal);
      const sent = first.map((rate) => rate.price);
      yield first;
      while (!signal.aborted && !closed) {
        if (!subscriber.dirty) {
          await new Promise<void>((resolve) => {
            subscriber.wake = resolve;
          });
          continue;
        }
        subscriber.dirty = false;
        const now = await deps.rates.current(request.base, request.quotes, signal);
        const changed = now.filter((rate, i) => rate.price !== sent[i]);
        if (changed.length === 0) continue;
        now.forEach((rate, i) => {
          sent[i] = rate.price;
        });
        yield changed;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      subscribers.delete(subscriber);
      deps.metrics.watchStreams.dec();
      if (subscribers.size === 0) stopLoop();
    }
  }

  return {
    watch,
    /** Open subscriptions, for tests and diagnostics. */
    get size() {
      return subscribers.size;
    },
    /** Ends every stream (normally, after the server has ended them with UNAVAILABLE) and the loop. */
    close() {
      closed = true;
      stopLoop();
      for (const subscriber of subscribers) {
        const wake = subscriber.wake;
        subscriber.wake = undefined;
        wake?.();
      }
    },
  };
}

export type RateWatch = ReturnType<typeof createRateWatch>;
