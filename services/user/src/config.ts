import { type CommonConfig, createEnvReader, readCommonConfig } from "@coinmesh/lib/config";

export interface UserConfig extends CommonConfig {
  databaseUrl: string | undefined;
}

export function readConfig(env: Record<string, string | undefined>): UserConfig {
  const read = createEnvReader(env);
  const config = {
    ...readCommonConfig(read, { port: 50051, metricsPort: 9461 }),
    databaseUrl: read.url("DATABASE_URL", ["postgres:", "postgresql:"]),
  };
  read.done();
  return config;
}
