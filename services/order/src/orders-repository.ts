import type { Queryable } from "@coinmesh/lib/postgres";
import { RateSource } from "@coinmesh/proto/rate/v1/rate_pb";
import { formatDecimal } from "./amounts.ts";
import type { OrderRecord, Side } from "./journal.ts";
import { NEWEST } from "./ledger-repository.ts";
import type { OrderReads } from "./orders.ts";

// Orders are written by journal-repository.ts, in the transaction of their fill.

const COLUMNS = `id, user_id, side, asset, quote_currency, quantity, limit_price, price, notional,
  rate_source, rate_as_of, transaction_id, create_time`;

const SOURCE_NAMES = new Map<RateSource, string>([
  [RateSource.UPSTREAM, "upstream"],
  [RateSource.CACHE, "cache"],
  [RateSource.SNAPSHOT, "snapshot"],
]);
const SOURCES = new Map([...SOURCE_NAMES].map(([source, name]) => [name, source]));

/** How a rate source is stored: a readable word, not an enum number that could be renumbered. */
export function rateSourceName(source: RateSource): string {
  return SOURCE_NAMES.get(source) ?? "unspecified";
}

interface OrderRow {
  id: string;
  user_id: string;
  side: Side;
  asset: string;
  quote_currency: string;
  quantity: string;
  limit_price: string | null;
  price: string;
  notional: string;
  rate_source: string;
  rate_as_of: Date | null;
  transaction_id: string;
  create_time: Date;
}

function toOrder(row: OrderRow): OrderRecord {
  return {
    id: row.id,
    userId: row.user_id,
    side: row.side,
    asset: row.asset,
    quoteCurrency: row.quote_currency,
    quantity: formatDecimal(row.quantity),
    limitPrice: row.limit_price === null ? undefined : formatDecimal(row.limit_price),
    price: formatDecimal(row.price),
    notional: formatDecimal(row.notional),
    rateSource: SOURCES.get(row.rate_source) ?? RateSource.UNSPECIFIED,
    rateAsOf: row.rate_as_of ?? undefined,
    transactionId: row.transaction_id,
    createTime: row.create_time,
  };
}

export function createOrdersRepository(db: Queryable): OrderReads {
  return {
    async get(id) {
      const { rows } = await db.query<OrderRow>(`SELECT ${COLUMNS} FROM orders WHERE id = $1`, [
        id,
      ]);
      return rows[0] && toOrder(rows[0]);
    },

    async list(userId, beforeId, limit) {
      const { rows } = await db.query<OrderRow>(
        `SELECT ${COLUMNS} FROM orders WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3`,
        [userId, beforeId ?? NEWEST, limit],
      );
      return rows.map(toOrder);
    },
  };
}
