/** Raised when the environment is unusable; lists every problem at once. */
export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
    this.problems = problems;
  }
}

type Env = Record<string, string | undefined>;

/**
 * Reads typed settings from an environment, collecting problems instead of stopping at the first.
 * Call `done()` after reading everything: it throws one ConfigError naming every bad variable.
 */
export function createEnvReader(env: Env) {
  const problems: string[] = [];
  const raw = (name: string) => {
    const value = env[name]?.trim();
    return value === undefined || value === "" ? undefined : value;
  };

  function int(name: string, fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
    const value = raw(name);
    if (value === undefined) return fallback;
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) {
      problems.push(`${name}=${JSON.stringify(value)} must be an integer from ${min} to ${max}`);
      return fallback;
    }
    return n;
  }

  function number(name: string, fallback: number, min: number, max: number): number {
    const value = raw(name);
    if (value === undefined) return fallback;
    const n = Number(value);
    if (!Number.isFinite(n) || n < min || n > max) {
      problems.push(`${name}=${JSON.stringify(value)} must be a number from ${min} to ${max}`);
      return fallback;
    }
    return n;
  }

  function url(name: string, protocols: string[]): string | undefined {
    const value = raw(name);
    if (value === undefined) return undefined;
    try {
      const parsed = new URL(value);
      if (!protocols.includes(parsed.protocol)) {
        problems.push(`${name} must use ${protocols.join(" or ")} (got ${parsed.protocol})`);
      }
      return value;
    } catch {
      problems.push(`${name} is not a valid URL`);
      return undefined;
    }
  }

  return {
    string: (name: string, fallback: string): string => raw(name) ?? fallback,
    optionalString: (name: string): string | undefined => raw(name),
    int,
    number,
    port: (name: string, fallback: number) => int(name, fallback, 0, 65535),
    bool(name: string, fallback: boolean): boolean {
      const value = raw(name)?.toLowerCase();
      if (value === undefined) return fallback;
      if (["1", "true", "yes", "on"].includes(value)) return true;
      if (["0", "false", "no", "off"].includes(value)) return false;
      problems.push(`${name}=${JSON.stringify(value)} must be true or false`);
      return fallback;
    },
    url,
    /** A `host:port` address of another service. */
    address(name: string, fallback: string): string {
      const value = raw(name) ?? fallback;
      if (!/^[\w.-]+:\d{1,5}$|^\[[\da-f:]+\]:\d{1,5}$/i.test(value)) {
        problems.push(`${name}=${JSON.stringify(value)} must be host:port`);
      }
      return value;
    },
    list(name: string): string[] {
      return (raw(name) ?? "")
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean);
    },
    /** Records a problem found while combining settings. */
    problem(message: string) {
      problems.push(message);
    },
    done() {
      if (problems.length > 0) throw new ConfigError(problems);
    },
  };
}

export type EnvReader = ReturnType<typeof createEnvReader>;

/** Settings every runnable shares. */
export interface CommonConfig {
  host: string;
  port: number;
  metricsPort: number;
  shutdownGraceMs: number;
  serviceVersion: string;
}

export function readCommonConfig(
  env: EnvReader,
  defaults: { port: number; metricsPort: number },
): CommonConfig {
  return {
    host: env.string("HOST", "127.0.0.1"),
    port: env.port("PORT", defaults.port),
    metricsPort: env.port("METRICS_PORT", defaults.metricsPort),
    shutdownGraceMs: env.int("SHUTDOWN_GRACE_MS", 10_000, 0, 600_000),
    serviceVersion: env.string("SERVICE_VERSION", "local"),
  };
}
