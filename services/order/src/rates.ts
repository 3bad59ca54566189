import { timestampMs } from "@bufbuild/protobuf/wkt";
import { AppError } from "@coinmesh/lib/errors";
import type { ServiceClient } from "@coinmesh/lib/grpc-client";
import type { RateService, RateSource } from "@coinmesh/proto/rate/v1/rate_pb";
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
 * Asks the rate service for every order's price. The rate service decides what is too old: it
 * fails GetRate with UNAVAILABLE past its maximum staleness, and that refusal is passed on. A
 * rate marked stale (past the cache's freshness window, refresh in flight) is still its answer.
 */
export function createRateQuotes(deps: {
  client: Pick<ServiceClient<typeof RateService>, "getRate">;
  timeoutMs: number;
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
        throw dependencyFailure(err, `the price of ${pair}`, "RATE_UNAVAILABLE");
      }
      const price = rate && parseQuotedPrice(rate.price);
      if (!rate || !price) {
        throw new AppError("unavailable", `the rate service sent no usable price for ${pair}`, {
          reason: "RATE_UNAVAILABLE",
          metadata: { price: rate?.price ?? "" },
        });
      }
      return {
        price,
        source: rate.source,
        asOf: rate.asOf && new Date(timestampMs(rate.asOf)),
      };
    },
  };
}
