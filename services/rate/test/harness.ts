import { randomBytes } from "node:crypto";
import { serve } from "@coinmesh/lib/grpc-server";
import { type Logger, silentLogger } from "@coinmesh/lib/log";
import { createMetrics } from "@coinmesh/lib/metrics";
import { createRedis, type Redis, whenRedisReady } from "@coinmesh/lib/redis";
import { startTestServer } from "@coinmesh/lib/testing";
import { RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { createRateService } from "../src/service.ts";
import type { FakeUpstream } from "./fake-upstream.ts";

/** A clock the test moves by hand. */
export function createFakeClock(start = Date.now()) {
  let now = start;
  return {
    now: () => now,
    advance(ms: number) {
      now += ms;
    },
  };
}

/** A Redis key prefix no other suite or run uses. */
export const uniquePrefix = () => `coinmesh:test:${randomBytes(6).toString("hex")}:rates`;

export interface RateServerOptions {
  upstream: FakeUpstream;
  clock?: () => number;
  redisUrl?: string;
  keyPrefix?: string;
  ttlMs?: number;
  maxStalenessMs?: number;
  allowSnapshot?: boolean;
  upstreamTimeoutMs?: number;
  log?: Logger;
}

/** The rate service as main wires it, served on 127.0.0.1:0, with its metrics registry. */
export async function startRateServer(options: RateServerOptions) {
  const log = options.log ?? silentLogger();
  const metrics = createMetrics();
  const redis: Redis | undefined = options.redisUrl
    ? createRedis(options.redisUrl, log, { connectTimeoutMs: 300, maxReconnectDelayMs: 200 })
    : undefined;
  if (redis) await whenRedisReady(redis, 500);
  const service = await createRateService({
    settings: {
      upstreamUrl: options.upstream.url,
      upstreamApiKey: "test-key",
      upstreamApiKeyHeader: "x-cg-demo-api-key",
      upstreamTimeoutMs: options.upstreamTimeoutMs ?? 300,
      ttlMs: options.ttlMs ?? 60_000,
      maxStalenessMs: options.maxStalenessMs ?? 900_000,
      allowSnapshot: options.allowSnapshot ?? false,
    },
    redis,
    registry: metrics.registry,
    log,
    clock: options.clock ?? Date.now,
    keyPrefix: options.keyPrefix ?? uniquePrefix(),
    upstreamBackoffMs: 10,
    retryDelayMs: 1_000,
  });
  const server = await startTestServer([serve(RateService, service.handlers)]);
  return {
    ...service,
    server,
    redis,
    grpc: server.grpcClient(RateService),
    connect: server.connectClient(RateService),
    /** The current value of one series of the registry, 0 when absent. */
    async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
      const metric = metrics.registry.getSingleMetric(name);
      if (!metric) throw new Error(`no metric ${name}`);
      const { values } = await metric.get();
      const match = values.find((v) =>
        Object.entries(labels).every(([k, value]) => v.labels[k] === value),
      );
      return match?.value ?? 0;
    },
    async stop() {
      await server.stop();
      service.watch.close();
      redis?.disconnect();
    },
  };
}

export type RateServer = Awaited<ReturnType<typeof startRateServer>>;

/** A logger that keeps what it is told, for asserting on log lines. */
export function captureLogger() {
  const lines: { level: string; msg: string; fields: unknown }[] = [];
  const at = (level: string) => (fields: unknown, msg?: string) => {
    lines.push(
      typeof fields === "string"
        ? { level, msg: fields, fields: {} }
        : { level, msg: msg ?? "", fields },
    );
  };
  const log = {
    trace: at("trace"),
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    fatal: at("fatal"),
    child: () => log,
  };
  return { log: log as unknown as Logger, lines };
}
