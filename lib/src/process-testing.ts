import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";

export interface SpawnedRunnable {
  child: ChildProcess;
  /** Parsed JSON log lines seen so far. */
  logs: Record<string, unknown>[];
  /** Resolves with the first log line matching predicate. */
  waitForLog(
    predicate: (line: Record<string, unknown>) => boolean,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
}

const root = new URL("../..", import.meta.url).pathname;

/**
 * Starts `node <entry>` from the repository root with JSON logs, for tests of whole processes,
 * with the telemetry hook preloaded as in production.
 */
export function spawnRunnable(entry: string, env: Record<string, string>): SpawnedRunnable {
  const child = spawn(process.execPath, ["--import", "./lib/src/telemetry-register.ts", entry], {
    cwd: root,
    env: { ...process.env, LOG_FORMAT: "json", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: Record<string, unknown>[] = [];
  const waiters = new Set<{
    predicate: (l: Record<string, unknown>) => boolean;
    resolve: (l: Record<string, unknown>) => void;
  }>();
  const stderr: string[] = [];
  child.stderr?.on("data", (chunk: Buffer) => stderr.push(chunk.toString()));
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (text) => {
    let line: Record<string, unknown>;
    try {
      line = JSON.parse(text);
    } catch {
      line = { msg: text };
    }
    logs.push(line);
    for (const waiter of waiters) {
      if (waiter.predicate(line)) {
        waiters.delete(waiter);
        waiter.resolve(line);
      }
    }
  });
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code) => resolve(code)),
  );
  return {
    child,
    logs,
    exited,
    waitForLog(predicate, timeoutMs = 20_000) {
      const seen = logs.find(predicate);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const waiter = { predicate, resolve };
        waiters.add(waiter);
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(
            new Error(
              `no matching log line within ${timeoutMs} ms; stderr: ${stderr.join("")}; logs: ${JSON.stringify(logs.slice(-5))}`,
            ),
          );
        }, timeoutMs);
        exited.then(() => {
          clearTimeout(timer);
          if (waiters.delete(waiter))
            reject(
              new Error(
                `process exited; stderr: ${stderr.join("")}; logs: ${JSON.stringify(logs.slice(-5))}`,
              ),
            );
        });
        const resolveOnce = waiter.resolve;
        waiter.resolve = (l) => {
          clearTimeout(timer);
          resolveOnce(l);
        };
      });
    },
  };
}
