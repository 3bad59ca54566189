import { openDatabase } from "@coinmesh/lib/database";
import { serve, startGrpcServer } from "@coinmesh/lib/grpc-server";
import { createMetrics, startMetricsServer } from "@coinmesh/lib/metrics";
import { runMain } from "@coinmesh/lib/runtime";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import { v7 as uuidv7 } from "uuid";
import { readConfig } from "./config.ts";
import { userHandlers } from "./server.ts";
import { createUsers } from "./users.ts";
import { createUsersRepository } from "./users-repository.ts";

const migrationsDir = new URL("../migrations", import.meta.url).pathname;

runMain("user", async (log) => {
  const config = readConfig(process.env);
  const db = await openDatabase({ url: config.databaseUrl, service: "user", migrationsDir, log });
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
  const users = createUsers({
    repo: createUsersRepository(db.pool),
    clock: () => new Date(),
    newId: uuidv7,
  });
  const server = await startGrpcServer({
    host: config.host,
    port: config.port,
    log,
    observer: metrics.server,
    services: [serve(UserService, userHandlers(users))],
  });
  server.setServing();
  log.info({ port: server.port, metricsPort: metricsServer.port }, "user service SERVING");
  return async () => {
    await server.shutdown(config.shutdownGraceMs);
    await Promise.all([db.close(), metricsServer.close()]);
  };
});
