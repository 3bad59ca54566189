import { join } from "node:path";
import { startEmbeddedPostgres } from "./embedded-postgres.ts";
import type { Logger } from "./log.ts";
import { migrate } from "./migrations.ts";
import { createPool, type Pool, type PoolOptions } from "./postgres.ts";

export interface Database {
  pool: Pool;
  /** True when running on the embedded PGlite rather than a real Postgres. */
  embedded: boolean;
  close(): Promise<void>;
}

export interface OpenDatabaseOptions extends PoolOptions {
  /** Real Postgres when set; otherwise an embedded database under `.data/<service>/`. */
  url: string | undefined;
  service: string;
  migrationsDir: string;
  log: Logger;
  /** Root of the per-service embedded data folders. */
  dataRoot?: string;
  migrate?: boolean;
}

/** Opens the service's database and brings its schema up to date. */
export async function openDatabase(options: OpenDatabaseOptions): Promise<Database> {
  const { log } = options;
  let url = options.url;
  let stopEmbedded: (() => Promise<void>) | undefined;
  if (!url) {
    const dataDir = join(options.dataRoot ?? join(process.cwd(), ".data"), options.service, "pg");
    const embedded = await startEmbeddedPostgres(dataDir);
    url = embedded.url;
    stopEmbedded = embedded.stop;
    log.info({ dataDir }, "DATABASE_URL unset: using embedded Postgres (PGlite)");
  }
  // PGlite has one backend: more connections only queue behind each other.
  const pool = createPool(url, log, stopEmbedded ? { ...options, max: 4 } : options);
  try {
    if (options.migrate !== false) await migrate(pool, options.migrationsDir, log);
  } catch (err) {
    await pool.end();
    await stopEmbedded?.();
    throw err;
  }
  return {
    pool,
    embedded: stopEmbedded !== undefined,
    async close() {
      await pool.end();
      await stopEmbedded?.();
    },
  };
}
