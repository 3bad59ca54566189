import { Decimal } from "decimal.js";

/** Fractional digits a price carries: what Postgres numeric(38,18) stores without rounding. */
export const PRICE_DECIMALS = 18;

// 80 significant digits cover every price below 10^20 to 60 fractional digits; the division
// truncates so the final rounding below is a single, exact half-even rounding.
const Wide = Decimal.clone({ precision: 80, rounding: Decimal.ROUND_DOWN });
// Products of two wide values, exact.
const Exact = Decimal.clone({ precision: 200, rounding: Decimal.ROUND_DOWN });
const UNIT = new Wide(10).pow(-PRICE_DECIMALS);
const HALF_UNIT = UNIT.div(2);
const MAX_PRICE = new Wide(10).pow(20);

/**
 * The price of one base in quote, given how many units of each one BTC buys:
 * value(quote) / value(base), rounded half-even to 18 fractional digits (exactly, as if the
 * quotient had infinite precision), trailing zeros trimmed, never in exponent notation.
 * Undefined when the price is outside what 18 fractional digits and numeric(38,18) can carry
 * (below 0.5e-18, which would round to 0, or 10^20 and above).
 */
export function derivePrice(baseValue: Decimal, quoteValue: Decimal): string | undefined {
  const base = new Wide(baseValue);
  const quote = new Wide(quoteValue);
  const quotient = quote.div(base);
  if (quotient.gte(MAX_PRICE)) return undefined;
  let price = quotient.toDecimalPlaces(PRICE_DECIMALS, Decimal.ROUND_DOWN);
  const tail = quotient.minus(price);
  let cmp = tail.cmp(HALF_UNIT);
  if (cmp === 0 && !new Exact(quotient).times(base).eq(quote)) cmp = 1;
  const lastDigitOdd = price.div(UNIT).mod(2).eq(1);
  if (cmp > 0 || (cmp === 0 && lastDigitOdd)) price = price.plus(UNIT);
  if (price.isZero()) return undefined;
  return price.toFixed();
}
