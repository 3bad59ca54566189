import { AppError, createViolations } from "@coinmesh/lib/errors";
import {
  PlaceOrderRequestSchema,
  PlaceOrderResponseSchema,
  type Side as SideProto,
} from "@coinmesh/proto/order/v1/order_pb";
import { type Decimal, formatDecimal, notionalOf, parseAmount, parsePrice } from "./amounts.ts";
import type { CurrencyCatalog } from "./currencies.ts";
import {
  HOUSE,
  type JournalEntry,
  move,
  type OrderRecord,
  type Side,
  userAccount,
} from "./journal.ts";
import { counted, type LedgerMetrics } from "./ledger-metrics.ts";
import { orderMessage, sideOf } from "./messages.ts";
import { readPageRequest, toPage } from "./pages.ts";
import type { Quote, RateQuotes } from "./rates.ts";
import { checkCurrencyCode, checkIdempotencyKey, checkUuid } from "./request-fields.ts";
import { allInOrder, type Call } from "./upstream.ts";
import type { UsersDirectory } from "./users-directory.ts";
import type { WriteOnce } from "./write-once.ts";

/** Order reads; implemented in orders-repository.ts. */
export interface OrderReads {
  get(id: string): Promise<OrderRecord | undefined>;
  /** The user's orders with an id below beforeId, newest first. */
  list(userId: string, beforeId: string | undefined, limit: number): Promise<OrderRecord[]>;
}

export interface OrdersDeps {
  writeOnce: WriteOnce;
  reads: OrderReads;
  users: UsersDirectory;
  currencies: CurrencyCatalog;
  rates: RateQuotes;
  metrics: LedgerMetrics;
  clock: () => Date;
  newId: () => string;
  /** The largest quantity, and the largest notional, of one order. */
  maxAmount: Decimal;
}

export interface PlaceOrderInput {
  userId: string;
  side: SideProto;
  asset: string;
  quoteCurrency: string;
  quantity: string;
  limitPrice?: string | undefined;
  idempotencyKey: string;
}

function limitCrossed(side: Side, pair: string, price: Decimal, limit: Decimal): AppError {
  const relation = side === "buy" ? "above" : "below";
  const description = `price ${formatDecimal(price)} is ${relation} the ${side} limit ${formatDecimal(limit)}`;
  return new AppError("failed_precondition", `${pair}: ${description}`, {
    preconditions: [{ type: "LIMIT_PRICE", subject: pair, description }],
    reason: "LIMIT_PRICE_CROSSED",
    metadata: { side, price: formatDecimal(price), limit_price: formatDecimal(limit) },
  });
}

/** A validated order. */
export interface OrderTicket {
  userId: string;
  side: Side;
  asset: string;
  quoteCurrency: string;
  quantity: Decimal;
  limit: Decimal | undefined;
}

/**
 * The fill of an order at a quoted price: the order and its trade entry. Throws
 * FAILED_PRECONDITION when the price crossed the limit, INVALID_ARGUMENT when the notional rounds
 * to zero or exceeds the maximum amount.
 */
export function fillOrder(
  ticket: OrderTicket,
  quote: Quote,
  fill: { id: string; transactionId: string; now: Date; maxAmount: Decimal },
): { order: OrderRecord; entry: JournalEntry } {
  const { side, asset, quoteCurrency, quantity, limit } = ticket;
  const { price } = quote;
  if (limit && (side === "buy" ? price.greaterThan(limit) : price.lessThan(limit))) {
    throw limitCrossed(side, `${asset}/${quoteCurrency}`, price, limit);
  }
  const notional = notionalOf(side, quantity, price);
  const tooLarge = notional.greaterThan(fill.maxAmount);
  if (notional.isZero() || tooLarge) {
    const violations = createViolations();
    violations.add(
      "quantity",
      `${formatDecimal(quantity)} ${asset} at ${formatDecimal(price)} comes to ` +
        `${formatDecimal(notional)} ${quoteCurrency}, ` +
        (tooLarge ? `above the maximum ${formatDecimal(fill.maxAmount)}` : "too small to trade"),
    );
    violations.throwIfAny();
  }
  const order: OrderRecord = {
    id: fill.id,
    userId: ticket.userId,
    side,
    asset,
    quoteCurrency,
    quantity: formatDecimal(quantity),
    limitPrice: limit && formatDecimal(limit),
    price: formatDecimal(price),
    notional: formatDecimal(notional),
    rateSource: quote.source,
    rateAsOf: quote.asOf,
    transactionId: fill.transactionId,
    createTime: fill.now,
  };
  const user = userAccount(ticket.userId);
  // The user pays the house what it gives up and receives from it what it gets.
  const postings =
    side === "buy"
      ? [...move(user, HOUSE, quoteCurrency, notional), ...move(HOUSE, user, asset, quantity)]
      : [...move(user, HOUSE, asset, quantity), ...move(HOUSE, user, quoteCurrency, notional)];
  const entry: JournalEntry = {
    id: fill.transactionId,
    kind: "trade",
    userId: ticket.userId,
    orderId: order.id,
    createTime: fill.now,
    postings,
  };
  return { order, entry };
}

/** Market orders filled against the house at the rate service's price. */
export function createOrders(deps: OrdersDeps) {
  const { writeOnce, reads, users, currencies, rates, metrics, maxAmount } = deps;

  return {
    placeOrder: (req: PlaceOrderInput, call: Call) => {
      const side = sideOf(req.side);
      return counted(
        (outcome) => {
          if (side) metrics.order(side, outcome);
          metrics.ledgerOperation("trade", outcome);
        },
        async () => {
          const violations = createViolations();
          const userId = checkUuid(req.userId, "user_id", violations);
          if (!side) violations.add("side", "must be SIDE_BUY or SIDE_SELL");
          const asset = checkCurrencyCode(req.asset, "asset", violations);
          const quoteCurrency = checkCurrencyCode(req.quoteCurrency, "quote_currency", violations);
          if (asset !== "" && asset === quoteCurrency) {
            violations.add("quote_currency", "must differ from asset");
          }
          const quantity = parseAmount(req.quantity, "quantity", maxAmount, violations);
          const limit =
            req.limitPrice === undefined
              ? undefined
              : parsePrice(req.limitPrice, "limit_price", violations);
          const key = checkIdempotencyKey(req.idempotencyKey, violations);
          violations.throwIfAny();
          if (!side) throw new Error("unreachable: side was validated");

          const prepare = async () => {
            const [, , quote] = await allInOrder([
              currencies.requireKnown(
                [
                  { field: "asset", code: asset },
                  { field: "quote_currency", code: quoteCurrency },
                ],
                call,
              ),
              users.requireUser(userId, "user_id", call),
              rates.quote(asset, quoteCurrency, call),
            ] as const);
            const filled = fillOrder(
              { userId, side, asset, quoteCurrency, quantity, limit },
              quote,
              { id: deps.newId(), transactionId: deps.newId(), now: deps.clock(), maxAmount },
            );
            return { ...filled, response: { order: orderMessage(filled.order) } };
          };

          return writeOnce(
            {
              rpc: "PlaceOrder",
              userId,
              key,
              requestSchema: PlaceOrderRequestSchema,
              request: {
                userId,
                side: req.side,
                asset,
                quoteCurrency,
                quantity: formatDecimal(quantity),
                limitPrice: limit && formatDecimal(limit),
              },
              responseSchema: PlaceOrderResponseSchema,
              prepare,
            },
            call,
          );
        },
      );
    },

    async getOrder(req: { id: string }) {
      const violations = createViolations();
      const id = checkUuid(req.id, "id", violations);
      violations.throwIfAny();
      const order = await reads.get(id);
      if (!order) throw new AppError("not_found", `order ${req.id} not found`);
      return { order: orderMessage(order) };
    },

    async listOrders(req: { userId: string; pageSize: number; pageToken: string }, call: Call) {
      const request = readPageRequest(req, "orders");
      const orders = await reads.list(request.userId, request.before, request.limit + 1);
      if (orders.length === 0 && !request.before) {
        await users.requireUser(request.userId, "user_id", call);
      }
      const page = toPage(orders, request, "orders");
      return { orders: page.items.map(orderMessage), nextPageToken: page.nextPageToken };
    },
  };
}

export type Orders = ReturnType<typeof createOrders>;
