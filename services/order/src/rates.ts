import { timestampMs } from "@bufbuild/protobuf/wkt";
import { AppError } from "@coinmesh/lib/errors";
import type { ServiceClient } from "@coinmesh/lib/grpc-client";
import { type RateService, RateSource } from "@coinmesh/proto/rate/v1/rate_pb";
import { type Decimal, parseQuotedPrice } from "./amounts.ts";
import { type Call, callOptions, dependencyFailure } from "./upstream.ts";

/** A price to fill an order at, and where it came from. */
export interface Quote {
  price: Decimal;
  source: RateSource;
  /** When the upstream produced the price, to the millisecond (what a timestamptz read returns). */
  asOf: Date | undefined;
}

export interface RateQuotes {
  /** The price of one asset in quote; UNAVAILABLE when the rate service refuses or fails. */
  quote(asset: string, quoteCurrency: string, call: Call): Promise<Quote>;
}

/**
 * Asks the rate service for every order's price, and refuses one too old to fill at. The rate
 * service fails GetRate with UNAVAILABLE past its own maximum staleness, and that refusal is
 * passed on; on top of it an order never fills at a price whose `as_of` is older than
 * `maxAgeMs` (a rate marked stale but younger, served while the cache refreshes, still fills),
 * nor at the bundled snapshot unless `allowSnapshot` (the offline default).
 */
export function createRateQuotes(deps: {
  client: Pick<ServiceClient<typeof RateService>, "getRate">;
  timeoutMs: number;
  maxAgeMs: number;
  allowSnapshot: boolean;
  clock: () => Date;
}): RateQuotes {
  return {
    async quote(asset, quoteCurrency, call) {
      const pair = `${asset}/${quoteCurrency}`;
      let rate: Awaited<ReturnType<typeof deps.client.getRate>>["rate"];
      try {
        ({ rate } = await deps.client.getRate(
          { base: asset, quote: quoteCurrency },
          callOptions(call, deps.timeoutMs),
        ));
      } catch (err) {
        if (err instanceof AppError && err.kind === "not_found") {
          throw new AppError("failed_precondition", `no price is quoted for ${pair}`, {
            reason: "RATE_NOT_FOUND",
            metadata: { asset, quote_currency: quoteCurrency },
          });
        }
        // A price the rate service refuses to compute: its reason and details, passed on.
        if (err instanceof AppError && err.kind === "failed_precondition") throw err;
        throw dependencyFailure(err, `the price of ${pair}`, "RATE_UNAVAILABLE");
      }
      const price = rate && parseQuotedPrice(rate.price);
      if (!rate || !price) {
        throw new AppError("unavailable", `the rate service sent no usable price for ${pair}`, {
          reason: "RATE_UNAVAILABLE",
          metadata: { price: rate?.price ?? "" },
        });
      }
      const asOf = rate.asOf && new Date(timestampMs(rate.asOf));
      if (rate.source === RateSource.SNAPSHOT) {
        if (!deps.allowSnapshot) {
          throw new AppError(
            "unavailable",
            `the price of ${pair} comes from the rate service's bundled snapshot, which orders do not fill at`,
            {
              reason: "RATE_STALE",
              metadata: { source: "SNAPSHOT", as_of: asOf?.toISOString() ?? "" },
            },
          );
        }
      } else {
        const ageMs = asOf ? deps.clock().getTime() - asOf.getTime() : Infinity;
        if (ageMs > deps.maxAgeMs) {
          const age = asOf ? `${Math.floor(ageMs / 1_000)} s old` : "undated";
          throw new AppError(
            "unavailable",
            `the price of ${pair} is ${age}; orders fill only at a price at most ${deps.maxAgeMs / 1_000} s old`,
            {
              reason: "RATE_STALE",
              metadata: {
                as_of: asOf?.toISOString() ?? "",
                max_age_seconds: String(deps.maxAgeMs / 1_000),
              },
            },
          );
        }
      }
      return { price, source: rate.source, asOf };
    },
  };
}
