import { AppError, type ErrorKind } from "@coinmesh/lib/errors";
import { Counter, type Registry } from "prom-client";
import type { Side, TransactionKind } from "./journal.ts";

export type Outcome = "ok" | "rejected" | "error";

/** What the domain reports; monitoring depends on the metric names behind it. */
export interface LedgerMetrics {
  ledgerOperation(kind: TransactionKind, outcome: Outcome): void;
  order(side: Side, outcome: Outcome): void;
}

export const noLedgerMetrics: LedgerMetrics = { ledgerOperation() {}, order() {} };

// The caller's mistake or the state of its accounts; anything else is ours or a dependency's.
const REJECTIONS = new Set<ErrorKind>([
  "invalid_argument",
  "not_found",
  "already_exists",
  "failed_precondition",
]);

export function outcomeOf(err: unknown): Outcome {
  return err instanceof AppError && REJECTIONS.has(err.kind) ? "rejected" : "error";
}

const ORDER_OUTCOME = { ok: "filled", rejected: "rejected", error: "error" } as const;

/**
 * coinmesh_ledger_operations_total{kind, outcome} and coinmesh_orders_total{side, outcome} on the
 * process registry. Every series starts at zero so that rate() works from the first scrape.
 */
export function createLedgerMetrics(registry: Registry): LedgerMetrics {
  const operations = new Counter({
    name: "coinmesh_ledger_operations_total",
    help: "Ledger operations executed, by kind and outcome (ok, rejected, error).",
    labelNames: ["kind", "outcome"],
    registers: [registry],
  });
  const orders = new Counter({
    name: "coinmesh_orders_total",
    help: "Orders placed, by side and outcome (filled, rejected, error).",
    labelNames: ["side", "outcome"],
    registers: [registry],
  });
  for (const outcome of ["ok", "rejected", "error"] as const) {
    for (const kind of ["deposit", "withdrawal", "transfer", "trade"] as const) {
      operations.inc({ kind, outcome }, 0);
    }
    for (const side of ["buy", "sell"] as const) {
      orders.inc({ side, outcome: ORDER_OUTCOME[outcome] }, 0);
    }
  }
  return {
    ledgerOperation: (kind, outcome) => operations.inc({ kind, outcome }),
    order: (side, outcome) => orders.inc({ side, outcome: ORDER_OUTCOME[outcome] }),
  };
}

/** Runs fn and records its outcome. */
export async function counted<T>(record: (outcome: Outcome) => void, fn: () => Promise<T>) {
  try {
    const result = await fn();
    record("ok");
    return result;
  } catch (err) {
    record(outcomeOf(err));
    throw err;
  }
}
