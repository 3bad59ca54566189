import type { FetchedRates } from "./rates-cache.ts";
import type { RatesTable } from "./rates-payload.ts";

export type RateSource = "upstream" | "cache" | "snapshot";

/** One set of rates and the three ways it can be served; built once, so reads allocate nothing. */
export interface RatesVersion {
  table: RatesTable;
  /** Time of the successful fetch (the upstream sends none), or the snapshot's recorded date. */
  asOf: Date;
  asOfMs: number;
  /** The payload as the upstream sent it, shared with other replicas through Redis. */
  raw: string;
  origin: "upstream" | "shared" | "snapshot";
  views: { upstream: RatesView; fresh: RatesView; stale: RatesView };
}

export interface RatesView {
  readonly version: RatesVersion;
  readonly source: RateSource;
  readonly stale: boolean;
}

/** Builds a version and its views once; reads then hand out the views as they are. */
export function makeVersion(
  rates: FetchedRates,
  asOfMs: number,
  origin: RatesVersion["origin"],
): RatesVersion {
  const version = {
    table: rates.table,
    raw: rates.raw,
    asOf: new Date(asOfMs),
    asOfMs,
    origin,
  } as RatesVersion;
  const snapshot = origin === "snapshot";
  const view = (source: RateSource, stale: boolean): RatesView =>
    Object.freeze({ version, source, stale });
  version.views = snapshot
    ? {
        upstream: view("snapshot", true),
        fresh: view("snapshot", true),
        stale: view("snapshot", true),
      }
    : {
        upstream: view("upstream", false),
        fresh: view("cache", false),
        stale: view("cache", true),
      };
  return version;
}
