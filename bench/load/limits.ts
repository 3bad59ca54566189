/** What `npm run load` accepts: loopback targets only, bounded in rate, time and count. */
export const LIMITS = {
  maxRate: 2_000,
  maxDurationS: 3_600,
  maxRequests: 1_000_000,
  /** Arrivals beyond this many unanswered calls are dropped and counted, not queued. */
  maxInFlight: 1_000,
  maxStreams: 50,
};

const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]", "::1"]);

export interface LoadSettings {
  target: URL;
  rate: number;
  durationS: number;
  maxRequests: number;
}

/** Parses "60", "60s", "5m" or "1h" into seconds. */
export function parseDuration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(s|m|h)?$/.exec(text.trim());
  if (!match) throw new Error(`--duration ${JSON.stringify(text)}: use e.g. 60s, 5m or 1h`);
  const unit = { s: 1, m: 60, h: 3_600 }[(match[2] ?? "s") as "s" | "m" | "h"];
  return Number(match[1]) * unit;
}

/** Checks every setting at once; throws one error naming each problem. */
export function checkSettings(input: {
  target: string;
  rate: string;
  duration: string;
  maxRequests?: string;
}): LoadSettings {
  const problems: string[] = [];
  let target: URL | undefined;
  try {
    target = new URL(input.target);
    if (!["http:"].includes(target.protocol)) problems.push("--target must be http://");
    if (!LOOPBACK.has(target.hostname)) {
      problems.push(
        `--target ${target.hostname} is not loopback: load runs only against this machine`,
      );
    }
  } catch {
    problems.push(`--target ${JSON.stringify(input.target)} is not a URL`);
  }
  const rate = Number(input.rate);
  if (!Number.isFinite(rate) || rate <= 0 || rate > LIMITS.maxRate) {
    problems.push(`--rate must be a number above 0 and at most ${LIMITS.maxRate} per second`);
  }
  let durationS = 0;
  try {
    durationS = parseDuration(input.duration);
    if (durationS <= 0 || durationS > LIMITS.maxDurationS) {
      problems.push(`--duration must be above 0 and at most ${LIMITS.maxDurationS / 3_600} h`);
    }
  } catch (err) {
    problems.push((err as Error).message);
  }
  const maxRequests = Number(input.maxRequests ?? LIMITS.maxRequests);
  if (!Number.isInteger(maxRequests) || maxRequests < 1 || maxRequests > LIMITS.maxRequests) {
    problems.push(`--max-requests must be an integer from 1 to ${LIMITS.maxRequests}`);
  }
  if (problems.length > 0 || !target) throw new Error(problems.join("\n"));
  return { target, rate, durationS, maxRequests };
}
