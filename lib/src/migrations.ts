import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type pg from "pg";
import type { Logger } from "./log.ts";

const MIGRATION_FILE = /^(\d{4})_[\w-]+\.sql$/;

/**
 * Applies the numbered `.sql` files in dir that are not yet recorded, each in its own
 * transaction, under an advisory lock so that replicas starting together apply each once.
 * Forward-only: a recorded migration whose file changed is an error, never re-applied.
 */
export async function migrate(pool: pg.Pool, dir: string, log: Logger): Promise<string[]> {
  const files = (await readdir(dir)).filter((f) => MIGRATION_FILE.test(f)).sort();
  const client = await pool.connect();
  try {
    // Key derived from the folder so services sharing a database do not block each other.
    const lockKey = createHash("sha256").update(dir).digest().readBigInt64BE(0);
    await client.query("SELECT pg_advisory_lock($1)", [lockKey]);
    try {
      await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
        name text PRIMARY KEY,
        checksum text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now())`);
      const applied = new Map<string, string>(
        (await client.query("SELECT name, checksum FROM schema_migrations")).rows.map((r) => [
          r.name,
          r.checksum,
        ]),
      );
      const done: string[] = [];
      for (const file of files) {
        const sql = await readFile(join(dir, file), "utf8");
        const checksum = createHash("sha256").update(sql).digest("hex");
        const recorded = applied.get(file);
        if (recorded !== undefined) {
          if (recorded !== checksum) {
            throw new Error(`migration ${file} was changed after it was applied; add a new one`);
          }
          continue;
        }
        await client.query("BEGIN");
        try {
          await client.query(sql);
          await client.query("INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)", [
            file,
            checksum,
          ]);
          await client.query("COMMIT");
        } catch (err) {
          await client.query("ROLLBACK");
          throw new Error(`migration ${file} failed`, { cause: err });
        }
        log.info({ migration: file }, "applied migration");
        done.push(file);
      }
      return done;
    } finally {
      await client.query("SELECT pg_advisory_unlock($1)", [lockKey]);
    }
  } finally {
    client.release();
  }
}
