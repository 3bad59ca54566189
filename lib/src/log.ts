import { trace } from "@opentelemetry/api";
import { type Logger, pino } from "pino";

export type { Logger };

/** JSON logs for machines; pretty lines when a person watches a terminal (or LOG_FORMAT=pretty). */
export function createLogger(name: string, level = process.env.LOG_LEVEL ?? "info"): Logger {
  const format = process.env.LOG_FORMAT;
  const pretty = format === "pretty" || (process.stdout.isTTY && format !== "json");
  return pino({
    name,
    level,
    base: { service: name },
    timestamp: pino.stdTimeFunctions.isoTime,
    // Correlates log lines with traces: Jaeger finds the trace from a line's trace_id.
    mixin() {
      const context = trace.getActiveSpan()?.spanContext();
      return context ? { trace_id: context.traceId, span_id: context.spanId } : {};
    },
    ...(pretty
      ? {
          transport: {
            target: "pino-pretty",
            options: { colorize: true, singleLine: true, ignore: "pid,hostname,service,name" },
          },
        }
      : {}),
  });
}

/** A logger that drops everything, for tests. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
