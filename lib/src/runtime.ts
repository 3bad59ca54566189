import { trace } from "@opentelemetry/api";
import { ConfigError } from "./config.ts";
import { createLogger, type Logger } from "./log.ts";
import { onShutdownSignal } from "./shutdown.ts";

/**
 * The frame of every runnable's main: a logger, a clear exit 1 for bad configuration or a failed
 * start, and a clean stop on SIGTERM/SIGINT. `start` returns the function that stops what it started.
 */
export function runMain(name: string, start: (log: Logger) => Promise<() => Promise<void>>): void {
  const log = createLogger(name);
  const started = start(log);
  // Listening from the first moment: a signal during start-up stops what has started once it has.
  onShutdownSignal(log, async () => {
    const stop = await started.catch(() => new Promise<never>(() => {}));
    await stop().finally(flushTraces);
  });
  started.catch((err: unknown) => {
    if (err instanceof ConfigError) log.error(err.message);
    else log.error({ err }, "failed to start");
    // Let the log line flush before exiting.
    setTimeout(() => process.exit(1), 100);
  });
}

/** Exports buffered spans before the process exits (a no-op when tracing is off). */
async function flushTraces(): Promise<void> {
  const provider = trace.getTracerProvider() as {
    getDelegate?: () => { forceFlush?: () => Promise<void> };
  };
  await provider.getDelegate?.().forceFlush?.();
}
