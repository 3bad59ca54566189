import { readFile } from "node:fs/promises";
import { parseRatesPayload, type RatesTable } from "./rates-payload.ts";

/**
 * When the values in snapshot.json were taken. The upstream format carries no time, so the
 * date lives here; it is the as_of of every snapshot rate. Update both together.
 */
export const SNAPSHOT_AS_OF = new Date("2026-11-20T00:00:00Z");

/** The bundled snapshot, in the upstream's exact format, validated like an upstream answer. */
export async function loadSnapshot(): Promise<{ table: RatesTable; raw: string; asOf: Date }> {
  const raw = await readFile(new URL("./snapshot.json", import.meta.url), "utf8");
  return { table: parseRatesPayload(raw), raw, asOf: SNAPSHOT_AS_OF };
}
