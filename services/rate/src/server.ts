import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceHandlers } from "@coinmesh/lib/grpc-service";
import {
  CurrencyType,
  GetRateResponseSchema,
  type Rate as RateMessage,
  RateSchema,
  type RateService,
  RateSource,
} from "@coinmesh/proto/rate/v1/rate_pb";
import type { Rate, Rates } from "./rates.ts";
import type { Currency } from "./rates-payload.ts";
import type { RateWatch } from "./watch.ts";

const SOURCE = {
  upstream: RateSource.UPSTREAM,
  cache: RateSource.CACHE,
  snapshot: RateSource.SNAPSHOT,
};
const TYPE = {
  fiat: CurrencyType.FIAT,
  crypto: CurrencyType.CRYPTO,
  commodity: CurrencyType.COMMODITY,
};

// Rates are immutable and memoized by the domain, so their messages are built once too:
// a cached GetRate serializes a ready message instead of building one per call.
const messages = new WeakMap<Rate, RateMessage>();
function toProto(rate: Rate): RateMessage {
  let message = messages.get(rate);
  if (!message) {
    message = create(RateSchema, {
      base: rate.base,
      quote: rate.quote,
      price: rate.price,
      source: SOURCE[rate.source],
      asOf: timestampFromDate(rate.asOf),
      stale: rate.stale,
    });
    messages.set(rate, message);
  }
  return message;
}

const responses = new WeakMap<Rate, ReturnType<typeof getRateResponse>>();
const getRateResponse = (rate: Rate) => create(GetRateResponseSchema, { rate: toProto(rate) });
function toGetRateResponse(rate: Rate) {
  let response = responses.get(rate);
  if (!response) {
    response = getRateResponse(rate);
    responses.set(rate, response);
  }
  return response;
}

const currencyToProto = (c: Currency) => ({
  code: c.code,
  name: c.name,
  unit: c.unit,
  type: TYPE[c.type],
});

export function rateHandlers(rates: Rates, watch: RateWatch): ServiceHandlers<typeof RateService> {
  return {
    listCurrencies: async (_req, ctx) => ({
      currencies: (await rates.listCurrencies(ctx.signal)).map(currencyToProto),
    }),
    getRate: async (req, ctx) =>
      toGetRateResponse(await rates.getRate(req.base, req.quote, ctx.signal)),
    getRates: async (req, ctx) => ({
      rates: (await rates.getRates(req.base, req.quotes, ctx.signal)).map(toProto),
    }),
    async *watchRates(req, ctx) {
      for await (const changed of watch.watch(req.base, req.quotes, ctx.signal)) {
        yield { rates: changed.map(toProto) };
      }
    },
  };
}
