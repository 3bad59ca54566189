import { createMetrics, startMetricsServer } from "@coinmesh/lib/metrics";
import { createRedis, whenRedisReady } from "@coinmesh/lib/redis";
import { runMain } from "@coinmesh/lib/runtime";
import { telemetrySettings } from "@coinmesh/lib/telemetry-settings";
import { readConfig } from "./config.ts";
import { startGateway } from "./gateway.ts";

runMain("gateway", async (log) => {
  const config = readConfig(process.env);
  const metrics = createMetrics();
  const metricsServer = await startMetricsServer(
    metrics.registry,
    config.host,
    config.metricsPort,
    log,
  );
  // Rate limiting answers from memory whenever Redis is slow or away: a short command timeout.
  const redis = config.redisUrl
    ? createRedis(config.redisUrl, log, { commandTimeoutMs: 50 })
    : undefined;
  if (redis && !(await whenRedisReady(redis, 2_000))) {
    log.warn("redis not ready after 2s; rate limits stay per replica until it connects");
  }
  const tracing = telemetrySettings(process.env, process.argv[1] ?? "").endpoint !== undefined;
  const gateway = await startGateway({ config, log, metrics, redis, tracing });
  log.info(
    {
      port: gateway.port,
      metricsPort: metricsServer.port,
      tls: Boolean(config.tls),
      backends: config.backends,
      jwt: config.jwt.jwksUrl ? "jwks" : "hs256",
      redis: Boolean(redis),
      tracing,
    },
    "gateway SERVING",
  );
  return async () => {
    await gateway.close(config.shutdownGraceMs);
    await Promise.all([redis?.quit().catch(() => redis.disconnect()), metricsServer.close()]);
  };
});
