import pg from "pg";
import type { Logger } from "./log.ts";

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;
/** Anything that runs queries: the pool, or a client inside a transaction. */
export type Queryable = Pick<pg.Pool, "query">;

export interface PoolOptions {
  max?: number;
  statementTimeoutMs?: number;
  connectTimeoutMs?: number;
  /**
   * Lets a client send queries without waiting for earlier results (node-postgres pipelining):
   * a transaction's statements then cost one round trip instead of one each.
   */
  pipeline?: boolean;
}

// numeric stays a string: money never passes through a float.
pg.types.setTypeParser(pg.types.builtins.NUMERIC, (value) => value);
pg.types.setTypeParser(pg.types.builtins.INT8, (value) => value);

/** A pool with bounded waits: node-postgres waits forever by default. */
export function createPool(url: string, log: Logger, options: PoolOptions = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.max ?? 10,
    connectionTimeoutMillis: options.connectTimeoutMs ?? 5_000,
    idleTimeoutMillis: 30_000,
    statement_timeout: options.statementTimeoutMs ?? 5_000,
    query_timeout: (options.statementTimeoutMs ?? 5_000) + 1_000,
    idle_in_transaction_session_timeout: 10_000,
    pipeline: options.pipeline ?? false,
  });
  pool.on("error", (err) => log.warn({ err }, "idle postgres client failed"));
  return pool;
}

/**
 * Runs fn on one checked-out client. If fn fails, any transaction it left open is rolled back;
 * a client that reported an error (node-postgres does not route those to the pool) is
 * destroyed instead of returned to the pool.
 */
export async function withClient<T>(
  pool: pg.Pool,
  fn: (client: pg.PoolClient) => Promise<T>,
): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  const onError = (err: Error) => {
    broken = err;
  };
  client.on("error", onError);
  try {
    return await fn(client);
  } catch (err) {
    await client.query("ROLLBACK").catch((rollbackError: Error) => {
      broken ??= rollbackError;
    });
    throw err;
  } finally {
    client.off("error", onError);
    client.release(broken);
  }
}

/** Runs fn inside BEGIN/COMMIT on one client; rolls back on any error and rethrows it. */
export function withTransaction<T>(
  pool: pg.Pool,
  fn: (client: pg.PoolClient) => Promise<T>,
): Promise<T> {
  return withClient(pool, async (client) => {
    await client.query("BEGIN");
    const result = await fn(client);
    await client.query("COMMIT");
    return result;
  });
}

/** The SQLSTATE of a Postgres error, if it is one. */
export function sqlState(err: unknown): string | undefined {
  return typeof err === "object" && err !== null && "code" in err && typeof err.code === "string"
    ? err.code
    : undefined;
}
