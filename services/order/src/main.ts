import { openDatabase } from "@coinmesh/lib/database";
import { createServiceClient } from "@coinmesh/lib/grpc-client";
import { startGrpcServer } from "@coinmesh/lib/grpc-server";
import { createMetrics, startMetricsServer } from "@coinmesh/lib/metrics";
import { runMain } from "@coinmesh/lib/runtime";
import { RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import { v7 as uuidv7 } from "uuid";
import { createApp } from "./app.ts";
import { readConfig } from "./config.ts";
import { startKeyCleanup } from "./key-cleanup.ts";
import { createLedgerMetrics } from "./ledger-metrics.ts";

const migrationsDir = new URL("../migrations", import.meta.url).pathname;

runMain("order", async (log) => {
  const config = readConfig(process.env);
  const db = await openDatabase({
    url: config.databaseUrl,
    service: "order",
    migrationsDir,
    log,
    max: config.databasePoolSize,
    // The embedded database's one backend serves every connection, and interleaved pipelines
    // confuse it: pipelining is for a real Postgres only.
    pipeline: config.databaseUrl !== undefined,
  });
  if (process.argv[2] === "migrate") {
    await db.close();
    process.exit(0);
  }
  const metrics = createMetrics();
  const metricsServer = await startMetricsServer(
    metrics.registry,
    config.host,
    config.metricsPort,
    log,
  );
  const clientOptions = { observer: metrics.client, defaultTimeoutMs: config.upstreamTimeoutMs };
  const userService = createServiceClient(UserService, config.userServiceAddress, clientOptions);
  const rateService = createServiceClient(RateService, config.rateServiceAddress, clientOptions);
  const clock = () => new Date();
  const app = createApp({
    pool: db.pool,
    preparedStatements: !db.embedded,
    userService: userService.client,
    rateService: rateService.client,
    config,
    metrics: createLedgerMetrics(metrics.registry),
    log,
    clock,
    newId: uuidv7,
  });
  const stopCleanup = startKeyCleanup({
    keys: app.journal,
    ttlMs: config.idempotencyKeyTtlMs,
    intervalMs: config.keyCleanupIntervalMs,
    clock,
    log,
  });
  const server = await startGrpcServer({
    host: config.host,
    port: config.port,
    log,
    observer: metrics.server,
    services: app.services,
  });
  server.setServing();
  log.info(
    {
      port: server.port,
      metricsPort: metricsServer.port,
      userService: config.userServiceAddress,
      rateService: config.rateServiceAddress,
    },
    "order service SERVING",
  );
  return async () => {
    await server.shutdown(config.shutdownGraceMs);
    await stopCleanup();
    userService.close();
    rateService.close();
    await Promise.all([db.close(), metricsServer.close()]);
  };
});
