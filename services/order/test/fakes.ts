import { AppError, createViolations } from "@coinmesh/lib/errors";
import { RateSource } from "@coinmesh/proto/rate/v1/rate_pb";
import { Decimal } from "../src/amounts.ts";
import type { CurrencyCatalog } from "../src/currencies.ts";
import type { Quote, RateQuotes } from "../src/rates.ts";
import type { UsersDirectory } from "../src/users-directory.ts";

// In-memory stand-ins for the user and rate services, for tests below the transport.

export function fakeUsers(known: Iterable<string>): UsersDirectory & { known: Set<string> } {
  const users = new Set(known);
  return {
    known: users,
    async requireUser(userId, field) {
      if (!users.has(userId)) {
        throw new AppError("not_found", `user ${userId} not found`, { metadata: { field } });
      }
    },
  };
}

export function fakeCurrencies(codes: string[]): CurrencyCatalog {
  const known = new Set(codes);
  return {
    async requireKnown(wanted) {
      const violations = createViolations();
      for (const { field, code } of wanted) {
        if (!known.has(code)) violations.add(field, `unknown currency ${code}`);
      }
      violations.throwIfAny("unknown currency");
    },
  };
}

/** Quotes from a price function; a thrown error stands for the rate service failing. */
export function fakeRates(price: (asset: string, quote: string) => string): RateQuotes & {
  calls: number;
} {
  const rates = {
    calls: 0,
    async quote(asset: string, quoteCurrency: string): Promise<Quote> {
      rates.calls++;
      return {
        price: new Decimal(price(asset, quoteCurrency)),
        source: RateSource.UPSTREAM,
        asOf: new Date("2026-11-20T12:00:00.000Z"),
      };
    },
  };
  return rates;
}

/** A deterministic pseudo-random generator (mulberry32), so a failing run can be repeated. */
export function seededRandom(seed: number) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (max: number) => Math.floor(next() * max),
    pick: <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T,
    /** A positive decimal string with up to `scale` fractional digits, below 10^digits. */
    decimal(digits: number, scale: number): string {
      const whole = Math.floor(next() * 10 ** digits);
      const fractionDigits = Math.floor(next() * (scale + 1));
      let fraction = "";
      for (let i = 0; i < fractionDigits; i++) fraction += String(Math.floor(next() * 10));
      const text = fraction ? `${whole}.${fraction}` : String(whole);
      return new Decimal(text).isZero() ? "1" : text;
    },
  };
}
