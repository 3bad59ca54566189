import { type Logger, pino } from "pino";

export type { Logger };

/** JSON logs for machines; pretty lines when a person watches a terminal. */
export function createLogger(name: string, level = process.env.LOG_LEVEL ?? "info"): Logger {
  const pretty = process.stdout.isTTY && process.env.LOG_FORMAT !== "json";
  return pino({
    name,
    level,
    base: { service: name },
    timestamp: pino.stdTimeFunctions.isoTime,
    ...(pretty
      ? {
          transport: { target: "pino-pretty", options: { colorize: true, ignore: "pid,hostname" } },
        }
      : {}),
  });
}

/** A logger that drops everything, for tests. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
