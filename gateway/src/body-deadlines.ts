/** Something that gives up once `deadline` (performance.now() ms) has passed. */
export interface Expiring {
  deadline: number;
  expire(): void;
}

export type BodyDeadlines = ReturnType<typeof createBodyDeadlines>;

/**
 * Deadlines of request bodies still arriving, checked every `intervalMs` on one timer (as node's
 * http server checks requestTimeout) rather than on a timer per call: nearly every body is still
 * in flight when its call starts waiting for it, so a timer per call would be one more
 * allocation on every call, only to catch the rare client that stalls or trickles. The timer
 * runs while something is watched.
 */
export function createBodyDeadlines(intervalMs: number) {
  const watched = new Set<Expiring>();
  let timer: NodeJS.Timeout | undefined;
  const sweep = () => {
    const now = performance.now();
    for (const entry of watched) {
      if (entry.deadline > now) continue;
      watched.delete(entry);
      entry.expire();
    }
    if (watched.size === 0) {
      clearInterval(timer);
      timer = undefined;
    }
  };
  return {
    watch(entry: Expiring) {
      watched.add(entry);
      timer ??= setInterval(sweep, intervalMs).unref();
    },
    unwatch(entry: Expiring) {
      watched.delete(entry);
    },
  };
}
