import type { Logger } from "./log.ts";

/**
 * Runs `stop` once on SIGTERM or SIGINT, then exits 0 (1 if stopping failed). A second Ctrl-C
 * (SIGINT) exits at once, for a person who does not want to wait; any other repeated signal is
 * logged and ignored, so a supervisor that forwards the terminal's SIGINT and then sends its own
 * SIGTERM does not cut the drain short.
 */
export function onShutdownSignal(log: Logger, stop: () => Promise<void>): void {
  let first: NodeJS.Signals | undefined;
  const handle = (signal: NodeJS.Signals) => {
    if (first) {
      if (signal === "SIGINT" && first === "SIGINT") {
        log.warn({ signal }, "second interrupt, exiting now");
        process.exit(1);
      }
      log.info({ signal }, "already shutting down");
      return;
    }
    first = signal;
    log.info({ signal }, "shutting down");
    stop().then(
      () => {
        log.info("stopped");
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", handle);
  process.on("SIGINT", handle);
}
