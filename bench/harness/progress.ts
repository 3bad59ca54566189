export interface Progress {
  /** Announces a step expected to take about expectedMs; returns its end. */
  step(label: string, expectedMs?: number): () => void;
  log(message: string): void;
}

/**
 * On a terminal, one status line redrawn four times a second (elapsed against expected time of
 * the step, and of the whole run); elsewhere (CI logs) one plain line per step.
 */
export function createProgress(out: NodeJS.WriteStream = process.stderr, silent = false): Progress {
  const runStart = performance.now();
  const elapsed = (since: number) => `${((performance.now() - since) / 1000).toFixed(0)}s`;
  const tty = out.isTTY === true;
  return {
    step(label, expectedMs) {
      if (silent) return () => {};
      const startedAt = performance.now();
      const expected = expectedMs ? `/~${Math.round(expectedMs / 1000)}s` : "";
      if (!tty) {
        out.write(`[bench ${elapsed(runStart)}] ${label}\n`);
        return () => {};
      }
      const draw = () =>
        out.write(
          `\r\x1b[2K[bench ${elapsed(runStart)}] ${label} ${elapsed(startedAt)}${expected}`,
        );
      draw();
      const timer = setInterval(draw, 250);
      return () => {
        clearInterval(timer);
        out.write("\r\x1b[2K");
      };
    },
    log(message) {
      if (silent) return;
      out.write(`${tty ? "\r\x1b[2K" : ""}[bench ${elapsed(runStart)}] ${message}\n`);
    },
  };
}
