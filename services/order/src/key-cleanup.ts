import type { Logger } from "@coinmesh/lib/log";

export interface KeyCleanupDeps {
  keys: { deleteKeysBefore(before: Date): Promise<number> };
  /** Keys younger than this are kept. */
  ttlMs: number;
  intervalMs: number;
  clock: () => Date;
  log: Logger;
}

/**
 * Deletes expired idempotency keys every intervalMs (the first run one interval after start).
 * Replicas may run it at the same time: deleting a row twice is harmless. Returns a stop function
 * that waits for a run in progress.
 */
export function startKeyCleanup(deps: KeyCleanupDeps): () => Promise<void> {
  let running: Promise<void> = Promise.resolve();
  const timer = setInterval(() => {
    const before = new Date(deps.clock().getTime() - deps.ttlMs);
    running = deps.keys.deleteKeysBefore(before).then(
      (deleted) => {
        if (deleted > 0) deps.log.info({ deleted, before }, "deleted expired idempotency keys");
      },
      (err: unknown) => deps.log.warn({ err }, "idempotency key cleanup failed; will retry"),
    );
  }, deps.intervalMs);
  timer.unref();
  return async () => {
    clearInterval(timer);
    await running;
  };
}
