import { type CommonConfig, createEnvReader, readCommonConfig } from "@coinmesh/lib/config";

export interface JwtConfig {
  /** Production: keys from a JWKS URL. */
  jwksUrl: string | undefined;
  /** Development: an HS256 shared secret (at least 32 bytes). */
  secret: string | undefined;
  issuer: string;
  audience: string;
  clockSkewSeconds: number;
}

export interface GatewayConfig extends CommonConfig {
  backends: { user: string; order: string; rate: string };
  jwt: JwtConfig;
  redisUrl: string | undefined;
  /** Tokens per second and bucket size, per subject (per client IP when anonymous); 0 disables. */
  rateLimit: { perSecond: number; burst: number };
  /** Proxies in front that append to X-Forwarded-For; 0 uses the socket's peer address. */
  trustedProxyHops: number;
  maxMessageBytes: number;
  defaultTimeoutMs: number;
  maxTimeoutMs: number;
  /** Longest a server stream lasts: caps a client's timeout, and applies when it sets none. */
  maxStreamDurationMs: number;
  corsOrigins: string[];
  tls: { certFile: string; keyFile: string } | undefined;
  maxConcurrentStreams: number;
  maxInFlight: number;
  headersTimeoutMs: number;
  idleTimeoutMs: number;
}

export const DEFAULT_JWT_ISSUER = "coinmesh-dev";
export const DEFAULT_JWT_AUDIENCE = "coinmesh";
const MIN_SECRET_BYTES = 32;

export function readJwtConfig(read: ReturnType<typeof createEnvReader>): JwtConfig {
  const jwt: JwtConfig = {
    jwksUrl: read.url("JWT_JWKS_URL", ["https:", "http:"]),
    secret: read.optionalString("JWT_SECRET"),
    issuer: read.string("JWT_ISSUER", DEFAULT_JWT_ISSUER),
    audience: read.string("JWT_AUDIENCE", DEFAULT_JWT_AUDIENCE),
    clockSkewSeconds: read.int("JWT_CLOCK_SKEW_SECONDS", 30, 0, 600),
  };
  if (jwt.jwksUrl === undefined && jwt.secret === undefined) {
    read.problem("set JWT_JWKS_URL (production) or JWT_SECRET (development, HS256)");
  } else if (jwt.jwksUrl !== undefined && jwt.secret !== undefined) {
    read.problem("set only one of JWT_JWKS_URL and JWT_SECRET");
  } else if (jwt.secret !== undefined && Buffer.byteLength(jwt.secret) < MIN_SECRET_BYTES) {
    read.problem(`JWT_SECRET must be at least ${MIN_SECRET_BYTES} bytes`);
  }
  return jwt;
}

export function readConfig(env: Record<string, string | undefined>): GatewayConfig {
  const read = createEnvReader(env);
  const certFile = read.optionalString("TLS_CERT_FILE");
  const keyFile = read.optionalString("TLS_KEY_FILE");
  if ((certFile === undefined) !== (keyFile === undefined)) {
    read.problem("set both TLS_CERT_FILE and TLS_KEY_FILE, or neither");
  }
  const config: GatewayConfig = {
    ...readCommonConfig(read, { port: 8080, metricsPort: 9460 }),
    backends: {
      user: read.address("USER_SERVICE_ADDR", "127.0.0.1:50051"),
      order: read.address("ORDER_SERVICE_ADDR", "127.0.0.1:50052"),
      rate: read.address("RATE_SERVICE_ADDR", "127.0.0.1:50053"),
    },
    jwt: readJwtConfig(read),
    redisUrl: read.url("REDIS_URL", ["redis:", "rediss:"]),
    rateLimit: {
      perSecond: read.number("RATE_LIMIT_PER_SECOND", 50, 0, 1_000_000),
      burst: read.int("RATE_LIMIT_BURST", 100, 1, 1_000_000),
    },
    trustedProxyHops: read.int("TRUSTED_PROXY_HOPS", 0, 0, 10),
    maxMessageBytes: read.int("MAX_MESSAGE_BYTES", 1024 * 1024, 1, 64 * 1024 * 1024),
    defaultTimeoutMs: read.int("DEFAULT_TIMEOUT_MS", 10_000, 1, 3_600_000),
    maxTimeoutMs: read.int("MAX_TIMEOUT_MS", 30_000, 1, 3_600_000),
    maxStreamDurationMs: read.int("MAX_STREAM_DURATION_MS", 3_600_000, 1, 86_400_000),
    corsOrigins: read.list("CORS_ORIGINS"),
    tls: certFile && keyFile ? { certFile, keyFile } : undefined,
    maxConcurrentStreams: read.int("MAX_CONCURRENT_STREAMS", 100, 1, 10_000),
    maxInFlight: read.int("MAX_IN_FLIGHT", 512, 1, 100_000),
    headersTimeoutMs: read.int("HEADERS_TIMEOUT_MS", 10_000, 100, 600_000),
    idleTimeoutMs: read.int("IDLE_TIMEOUT_MS", 120_000, 1_000, 3_600_000),
  };
  if (config.defaultTimeoutMs > config.maxTimeoutMs) {
    read.problem("DEFAULT_TIMEOUT_MS must not exceed MAX_TIMEOUT_MS");
  }
  for (const origin of config.corsOrigins) {
    if (origin !== "*" && !/^https?:\/\/[^/]+$/.test(origin)) {
      read.problem(`CORS_ORIGINS entry ${JSON.stringify(origin)} must be scheme://host[:port]`);
    }
  }
  read.done();
  return config;
}
