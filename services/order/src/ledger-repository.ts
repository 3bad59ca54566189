import type { Queryable } from "@coinmesh/lib/postgres";
import { formatDecimal } from "./amounts.ts";
import { type JournalEntry, type TransactionKind, userAccount } from "./journal.ts";
import type { LedgerReads } from "./ledger.ts";

// Entries are written by journal-repository.ts; these are the reads.

/** Greater than every UUIDv7: the cursor of a first page, so one query plan serves every page. */
export const NEWEST = "ffffffff-ffff-ffff-ffff-ffffffffffff";

// The page of transaction ids comes from the partial index postings_user_history (its predicate
// is repeated so the planner can use it), then each transaction with all of its postings.
const HISTORY = `
SELECT t.id, t.kind, t.user_id, t.order_id, t.create_time, p.account, p.currency, p.amount
FROM (
  SELECT DISTINCT transaction_id FROM postings
  WHERE account = $1 AND account LIKE 'user:%' AND transaction_id < $2
  ORDER BY transaction_id DESC
  LIMIT $3
) page
JOIN transactions t ON t.id = page.transaction_id
JOIN postings p ON p.transaction_id = t.id
ORDER BY t.id DESC, p.seq`;

interface HistoryRow {
  id: string;
  kind: TransactionKind;
  user_id: string;
  order_id: string | null;
  create_time: Date;
  account: string;
  currency: string;
  amount: string;
}

export function createLedgerRepository(db: Queryable): LedgerReads {
  return {
    async balances(userId) {
      const { rows } = await db.query<{ currency: string; balance: string }>(
        "SELECT currency, balance FROM accounts WHERE user_id = $1 ORDER BY currency",
        [userId],
      );
      return rows.map((r) => ({ currency: r.currency, amount: formatDecimal(r.balance) }));
    },

    async history(userId, beforeId, limit) {
      const { rows } = await db.query<HistoryRow>(HISTORY, [
        userAccount(userId),
        beforeId ?? NEWEST,
        limit,
      ]);
      const entries: JournalEntry[] = [];
      for (const row of rows) {
        let entry = entries.at(-1);
        if (entry?.id !== row.id) {
          entry = {
            id: row.id,
            kind: row.kind,
            userId: row.user_id,
            orderId: row.order_id ?? undefined,
            createTime: row.create_time,
            postings: [],
          };
          entries.push(entry);
        }
        entry.postings.push({
          account: row.account,
          currency: row.currency,
          amount: formatDecimal(row.amount),
        });
      }
      return entries;
    },
  };
}
