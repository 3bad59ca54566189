import type { RateSource } from "@coinmesh/proto/rate/v1/rate_pb";
import { Decimal, formatDecimal } from "./amounts.ts";

export type TransactionKind = "deposit" | "withdrawal" | "transfer" | "trade";
export type Side = "buy" | "sell";

/** The outside world: money comes from it with deposits and goes to it with withdrawals. */
export const EXTERNAL = "external";
/** The exchange's liquidity, the counterparty of every trade. */
export const HOUSE = "house";
const USER_PREFIX = "user:";

export function userAccount(userId: string): string {
  return `${USER_PREFIX}${userId}`;
}

/** The user an account belongs to, or undefined for the house and the outside world. */
export function userOfAccount(account: string): string | undefined {
  return account.startsWith(USER_PREFIX) ? account.slice(USER_PREFIX.length) : undefined;
}

/** One leg of a transaction; amount is a canonical signed decimal string. */
export interface Posting {
  account: string;
  currency: string;
  amount: string;
}

/** A balanced set of postings, written atomically. */
export interface JournalEntry {
  id: string;
  kind: TransactionKind;
  /** The acting user: the idempotency scope, the payer of a transfer. */
  userId: string;
  orderId: string | undefined;
  createTime: Date;
  postings: Posting[];
}

/** A filled market order. Decimals are canonical strings. */
export interface OrderRecord {
  id: string;
  userId: string;
  side: Side;
  asset: string;
  quoteCurrency: string;
  quantity: string;
  limitPrice: string | undefined;
  price: string;
  notional: string;
  rateSource: RateSource;
  rateAsOf: Date | undefined;
  transactionId: string;
  createTime: Date;
}

/** The pair of postings that moves amount of currency from one account to another. */
export function move(from: string, to: string, currency: string, amount: Decimal): Posting[] {
  return [
    { account: from, currency, amount: formatDecimal(amount.negated()) },
    { account: to, currency, amount: formatDecimal(amount) },
  ];
}

/** Throws unless the postings sum to zero in every currency: a broken entry is a bug, never data. */
export function assertBalanced(postings: Posting[]): void {
  const sums = new Map<string, Decimal>();
  for (const p of postings) {
    sums.set(p.currency, (sums.get(p.currency) ?? new Decimal(0)).plus(p.amount));
  }
  for (const [currency, sum] of sums) {
    if (!sum.isZero()) throw new Error(`unbalanced entry: ${currency} postings sum to ${sum}`);
  }
}
