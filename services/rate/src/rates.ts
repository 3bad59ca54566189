import { AppError, createViolations } from "@coinmesh/lib/errors";
import { derivePrice } from "./price.ts";
import type { RatesCache } from "./rates-cache.ts";
import type { Currency } from "./rates-payload.ts";
import type { RateSource, RatesView } from "./rates-version.ts";

/** The price of one base in quote, and where it came from. Immutable: memoized and shared. */
export interface Rate {
  readonly base: string;
  readonly quote: string;
  /** Decimal string, at most 18 fractional digits; "1" when base = quote. */
  readonly price: string;
  readonly source: RateSource;
  readonly asOf: Date;
  readonly stale: boolean;
}

export interface RatesDeps {
  cache: Pick<RatesCache, "read" | "readAnyAge">;
}

export const MAX_QUOTES = 100;
const MAX_CODE_LENGTH = 32;

type Violations = ReturnType<typeof createViolations>;

const plausible = (code: string) => code !== "" && code.length <= MAX_CODE_LENGTH;

function checkCode(raw: string, field: string, violations: Violations): string {
  if (raw === "") violations.add(field, "is required");
  else if (raw.length > MAX_CODE_LENGTH) {
    violations.add(field, `must be at most ${MAX_CODE_LENGTH} characters`);
  }
  return raw.toUpperCase();
}

/** NOT_FOUND naming every code of the request that the served rates do not know. */
function unknownOf(view: RatesView, codes: string[]): AppError {
  const unique = [...new Set(codes.filter((code) => !view.version.table.values.has(code)))];
  const list = unique.join(", ");
  return new AppError("not_found", `unknown currency ${list}`, {
    reason: "UNKNOWN_CURRENCY",
    metadata: { code: unique.join(",") },
  });
}

/** Pricing over the cached rates: every pair derived exactly, memoized per served view. */
export function createRates({ cache }: RatesDeps) {
  // One memo per view (a rates version served fresh, stale or as fetched); dropped with it.
  const memo = new WeakMap<RatesView, Map<string, Map<string, Rate>>>();

  /** The memoized rate, or undefined when either code is not in this version's table. */
  function rateIn(view: RatesView, base: string, quote: string): Rate | undefined {
    let byBase = memo.get(view);
    if (!byBase) {
      byBase = new Map();
      memo.set(view, byBase);
    }
    let byQuote = byBase.get(base);
    const known = byQuote?.get(quote);
    if (known) return known;
    const values = view.version.table.values;
    const baseValue = values.get(base);
    const quoteValue = values.get(quote);
    if (!baseValue || !quoteValue) return undefined;
    const price = base === quote ? "1" : derivePrice(baseValue, quoteValue);
    if (price === undefined) {
      throw new AppError(
        "failed_precondition",
        `the price of ${base} in ${quote} is outside what 18 fractional digits can express`,
        { reason: "PRICE_OUT_OF_RANGE", metadata: { base, quote } },
      );
    }
    const rate: Rate = Object.freeze({
      base,
      quote,
      price,
      source: view.source,
      asOf: view.version.asOf,
      stale: view.stale,
    });
    if (!byQuote) {
      byQuote = new Map();
      byBase.set(base, byQuote);
    }
    byQuote.set(quote, rate);
    return rate;
  }

  /** Rates of base in each quote, in order; NOT_FOUND names every unknown code. */
  function ratesIn(view: RatesView, base: string, quotes: string[]): Rate[] {
    const out: Rate[] = [];
    let unknown = false;
    for (const quote of quotes) {
      const rate = rateIn(view, base, quote);
      if (rate) out.push(rate);
      else unknown = true;
    }
    if (unknown) throw unknownOf(view, [base, ...quotes]);
    return out;
  }

  function checkQuotes(quotes: string[], violations: Violations): string[] {
    if (quotes.length === 0) violations.add("quotes", "must list at least 1 code");
    if (quotes.length > MAX_QUOTES)
      violations.add("quotes", `must list at most ${MAX_QUOTES} codes`);
    return quotes.slice(0, MAX_QUOTES).map((q, i) => checkCode(q, `quotes[${i}]`, violations));
  }

  return {
    async listCurrencies(signal?: AbortSignal): Promise<Currency[]> {
      const view = await cache.readAnyAge(signal);
      return view.version.table.currencies;
    },

    async getRate(base: string, quote: string, signal?: AbortSignal): Promise<Rate> {
      // The hot path: no violations list unless something is wrong.
      if (!plausible(base) || !plausible(quote)) {
        const violations = createViolations();
        checkCode(base, "base", violations);
        checkCode(quote, "quote", violations);
        violations.throwIfAny();
      }
      const b = base.toUpperCase();
      const q = quote.toUpperCase();
      const view = await cache.read(signal);
      const rate = rateIn(view, b, q);
      if (rate) return rate;
      throw unknownOf(view, [b, q]);
    },

    async getRates(base: string, quotes: string[], signal?: AbortSignal): Promise<Rate[]> {
      const request = validateMany(base, quotes);
      return ratesIn(await cache.read(signal), request.base, request.quotes);
    },

    /** Validates a base and quotes request once (WatchRates re-prices it after each refresh). */
    validate: validateMany,
    /** Rates for an already validated request, from the view served now. */
    async current(base: string, quotes: string[], signal?: AbortSignal): Promise<Rate[]> {
      return ratesIn(await cache.read(signal), base, quotes);
    },
  };

  function validateMany(base: string, quotes: string[]) {
    const violations = createViolations();
    const request = {
      base: checkCode(base, "base", violations),
      quotes: checkQuotes(quotes, violations),
    };
    violations.throwIfAny();
    return request;
  }
}

export type Rates = ReturnType<typeof createRates>;
