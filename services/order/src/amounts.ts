import type { createViolations } from "@coinmesh/lib/errors";
import { Decimal as DecimalJs } from "decimal.js";

/**
 * Exact decimal arithmetic for money. 100 significant digits hold any product of a quantity and a
 * price without rounding (numeric(38, 18) times an 80-character price); the only rounding is the
 * explicit one in notionalOf. toFixed never switches to exponent notation.
 */
export const Decimal = DecimalJs.clone({ precision: 100, toExpNeg: -1000, toExpPos: 1000 });
export type Decimal = DecimalJs;

/** Amounts and quantities are stored as numeric(38, 18). */
export const SCALE = 18;
/** numeric(38, 18) holds at most 20 integer digits. */
const STORAGE_LIMIT = new Decimal("1e20");
/** Unsigned decimal: digits with an optional fraction, no sign, exponent or spaces. */
const DECIMAL = /^\d+(\.\d+)?$/;
const MAX_LENGTH = 80;

type Violations = ReturnType<typeof createViolations>;

/**
 * The canonical text of a decimal in every response: plain notation, no trailing fractional
 * zeros, no trailing point ("100", "0.5", "-12.000001").
 */
export function formatDecimal(value: Decimal | string): string {
  return (typeof value === "string" ? new Decimal(value) : value).toFixed();
}

const ZERO = new Decimal(0);

/**
 * A positive decimal string of at most 18 fractional digits. When it is not one, a violation is
 * added and zero returned: the caller throws before using it.
 */
function parseDecimal(raw: string, field: string, violations: Violations): Decimal {
  if (raw === "") {
    violations.add(field, "is required");
    return ZERO;
  }
  if (raw.length > MAX_LENGTH || !DECIMAL.test(raw)) {
    violations.add(
      field,
      'must be a decimal number such as "12.5" (digits and one optional point)',
    );
    return ZERO;
  }
  const value = new Decimal(raw);
  if (value.isZero()) {
    violations.add(field, "must be greater than zero");
  } else if (value.decimalPlaces() > SCALE) {
    // Trailing zeros do not count: "1.50000000000000000000" is 1.5.
    violations.add(field, `must have at most ${SCALE} fractional digits`);
  }
  return value;
}

/** A positive amount or quantity of at most 18 fractional digits, no larger than max. */
export function parseAmount(
  raw: string,
  field: string,
  max: Decimal,
  violations: Violations,
): Decimal {
  const value = parseDecimal(raw, field, violations);
  if (value.greaterThan(max)) violations.add(field, `must be at most ${formatDecimal(max)}`);
  return value;
}

/** A positive price of at most 18 fractional digits that fits numeric(38, 18). */
export function parsePrice(raw: string, field: string, violations: Violations): Decimal {
  const value = parseDecimal(raw, field, violations);
  if (value.greaterThanOrEqualTo(STORAGE_LIMIT)) {
    violations.add(field, "must have at most 20 integer digits");
  }
  return value;
}

/** A price quoted by the rate service: positive, any scale; undefined when unusable. */
export function parseQuotedPrice(raw: string): Decimal | undefined {
  if (raw.length > MAX_LENGTH || !DECIMAL.test(raw)) return undefined;
  const value = new Decimal(raw);
  return value.isZero() ? undefined : value;
}

/** The largest amount a configuration may allow: anything larger would not fit numeric(38, 18). */
export function isStorableMax(value: Decimal): boolean {
  return value.greaterThan(0) && value.lessThan(STORAGE_LIMIT) && value.decimalPlaces() <= SCALE;
}

/**
 * quantity × price rounded to 18 fractional digits in the house's favour: up for a buy (what the
 * user pays), down for a sell (what the user receives).
 */
export function notionalOf(side: "buy" | "sell", quantity: Decimal, price: Decimal): Decimal {
  return quantity
    .times(price)
    .toDecimalPlaces(SCALE, side === "buy" ? Decimal.ROUND_UP : Decimal.ROUND_DOWN);
}
