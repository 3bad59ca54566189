import { serve, startGrpcServer } from "@coinmesh/lib/grpc-server";
import { createMetrics, startMetricsServer } from "@coinmesh/lib/metrics";
import { createRedis, whenRedisReady } from "@coinmesh/lib/redis";
import { runMain } from "@coinmesh/lib/runtime";
import { RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { readConfig } from "./config.ts";
import { createRateService } from "./service.ts";

runMain("rate", async (log) => {
  const config = readConfig(process.env);
  const metrics = createMetrics();
  const metricsServer = await startMetricsServer(
    metrics.registry,
    config.host,
    config.metricsPort,
    log,
  );
  const redis = config.redisUrl ? createRedis(config.redisUrl, log) : undefined;
  if (redis && !(await whenRedisReady(redis, 2_000))) {
    log.warn("redis not ready after 2s; starting without it, it joins when it connects");
  }
  const service = await createRateService({
    settings: config,
    redis,
    keyPrefix: config.redisKey,
    registry: metrics.registry,
    log,
    clock: Date.now,
  });
  const server = await startGrpcServer({
    host: config.host,
    port: config.port,
    log,
    observer: metrics.server,
    services: [serve(RateService, service.handlers)],
  });
  // Warm up in the background: early calls join this refresh instead of starting their own.
  void service.cache.refresh();
  server.setServing();
  log.info(
    {
      port: server.port,
      metricsPort: metricsServer.port,
      upstream: config.upstreamUrl,
      redis: Boolean(redis),
      allowSnapshot: config.allowSnapshot,
    },
    "rate service SERVING",
  );
  return async () => {
    await server.shutdown(config.shutdownGraceMs);
    service.watch.close();
    await Promise.all([redis?.quit().catch(() => redis.disconnect()), metricsServer.close()]);
  };
});
