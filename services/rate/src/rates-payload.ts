import { Decimal } from "decimal.js";

/** The upstream's currency kinds, as CoinGecko spells them. */
export const CURRENCY_TYPES = ["fiat", "crypto", "commodity"] as const;
export type CurrencyType = (typeof CURRENCY_TYPES)[number];

export interface Currency {
  /** Upper-case code, e.g. "USD", "BITS". */
  code: string;
  name: string;
  unit: string;
  type: CurrencyType;
}

/** One decoded `/api/v3/exchange_rates` payload: how many units of each currency one BTC buys. */
export interface RatesTable {
  /** In code order. */
  currencies: Currency[];
  values: Map<string, Decimal>;
}

/** The payload broke the upstream's format; the whole payload is rejected. */
export class InvalidRatesPayload extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidRatesPayload";
  }
}

const CODE = /^[a-z0-9]{1,20}$/i;
const MAX_CURRENCIES = 1_000;

/** A JSON number's exact source text, kept so no value ever passes through a double. */
class ExactNumber {
  readonly source: string;
  constructor(source: string) {
    this.source = source;
  }
}

type Reviver = (key: string, value: unknown, context: { source?: string }) => unknown;

/** JSON.parse with every number replaced by its source text (Node 24: JSON.parse source access). */
export function parseExactJson(text: string): unknown {
  const reviver: Reviver = (_key, value, context) =>
    typeof value === "number" ? new ExactNumber(context.source ?? String(value)) : value;
  return JSON.parse(text, reviver as (key: string, value: unknown) => unknown);
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof ExactNumber);

/** The exact decimal value of a parsed JSON number, or undefined if it is not one. */
export function exactNumber(value: unknown): Decimal | undefined {
  return value instanceof ExactNumber ? new Decimal(value.source) : undefined;
}

function entry(key: string, raw: unknown): { currency: Currency; value: Decimal } | string {
  if (!CODE.test(key)) return `code ${JSON.stringify(key)} is not 1-20 letters or digits`;
  if (!isObject(raw)) return `${key}: not an object`;
  const { name, unit, value, type } = raw;
  if (typeof name !== "string" || name.trim() === "") return `${key}.name: not a non-empty string`;
  if (typeof unit !== "string") return `${key}.unit: not a string`;
  if (!CURRENCY_TYPES.includes(type as CurrencyType)) {
    return `${key}.type: ${JSON.stringify(type)} is not fiat, crypto or commodity`;
  }
  const decimal = exactNumber(value);
  if (!decimal) return `${key}.value: not a number`;
  if (!decimal.isFinite() || !decimal.isPositive() || decimal.isZero()) {
    return `${key}.value: ${decimal.toString()} is not a positive finite number`;
  }
  return {
    currency: { code: key.toUpperCase(), name, unit, type: type as CurrencyType },
    value: decimal,
  };
}

/**
 * Validates an already parsed payload strictly: `{"rates": {code: {name, unit, value, type}}}`
 * with BTC at 1, positive finite values and known types. Any problem rejects it all.
 */
export function decodeRates(parsed: unknown): RatesTable {
  if (!isObject(parsed) || !isObject(parsed.rates)) {
    throw new InvalidRatesPayload('expected an object with a "rates" object');
  }
  const keys = Object.keys(parsed.rates);
  if (keys.length === 0) throw new InvalidRatesPayload('"rates" is empty');
  if (keys.length > MAX_CURRENCIES) {
    throw new InvalidRatesPayload(`"rates" has ${keys.length} currencies (max ${MAX_CURRENCIES})`);
  }
  const currencies: Currency[] = [];
  const values = new Map<string, Decimal>();
  const problems: string[] = [];
  for (const key of keys) {
    const result = entry(key, parsed.rates[key]);
    if (typeof result === "string") problems.push(result);
    else if (values.has(result.currency.code)) problems.push(`${key}: duplicate code`);
    else {
      currencies.push(result.currency);
      values.set(result.currency.code, result.value);
    }
  }
  // Every value is per BTC: without BTC at exactly 1 the payload is not what it claims to be.
  const btc = values.get("BTC");
  if (!btc) problems.push("no BTC: values are per BTC");
  else if (!btc.eq(1)) problems.push(`BTC is ${btc.toString()}, not 1: values are per BTC`);
  if (problems.length > 0) {
    const shown = problems.slice(0, 5).join("; ");
    throw new InvalidRatesPayload(problems.length > 5 ? `${shown}; ...` : shown);
  }
  currencies.sort((a, b) => (a.code < b.code ? -1 : a.code > b.code ? 1 : 0));
  return { currencies, values };
}

/** Parses and validates an upstream response body. */
export function parseRatesPayload(text: string): RatesTable {
  let parsed: unknown;
  try {
    parsed = parseExactJson(text);
  } catch (err) {
    throw new InvalidRatesPayload(`not JSON: ${(err as Error).message}`);
  }
  return decodeRates(parsed);
}
