import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  TransactionKind as TransactionKindProto,
  type TransactionSchema,
} from "@coinmesh/proto/order/v1/account_pb";
import {
  type OrderSchema,
  OrderStatus,
  Side as SideProto,
} from "@coinmesh/proto/order/v1/order_pb";
import type { JournalEntry, OrderRecord, Side, TransactionKind } from "./journal.ts";

// Domain records as protobuf messages: one mapping for responses, replays and reads alike.

const KINDS = {
  deposit: TransactionKindProto.DEPOSIT,
  withdrawal: TransactionKindProto.WITHDRAWAL,
  transfer: TransactionKindProto.TRANSFER,
  trade: TransactionKindProto.TRADE,
} as const satisfies Record<TransactionKind, TransactionKindProto>;

const SIDES = { buy: SideProto.BUY, sell: SideProto.SELL } as const satisfies Record<
  Side,
  SideProto
>;

/** The domain side of a request's side, or undefined for SIDE_UNSPECIFIED and unknown values. */
export function sideOf(side: SideProto): Side | undefined {
  return side === SideProto.BUY ? "buy" : side === SideProto.SELL ? "sell" : undefined;
}

export function transactionMessage(
  entry: JournalEntry,
): MessageInitShape<typeof TransactionSchema> {
  return {
    id: entry.id,
    kind: KINDS[entry.kind],
    postings: entry.postings,
    orderId: entry.orderId ?? "",
    createTime: timestampFromDate(entry.createTime),
  };
}

export function orderMessage(order: OrderRecord): MessageInitShape<typeof OrderSchema> {
  return {
    id: order.id,
    userId: order.userId,
    side: SIDES[order.side],
    asset: order.asset,
    quoteCurrency: order.quoteCurrency,
    quantity: order.quantity,
    limitPrice: order.limitPrice,
    price: order.price,
    notional: order.notional,
    // Market orders fill in full or not at all: an order that exists is filled.
    status: OrderStatus.FILLED,
    rateSource: order.rateSource,
    rateAsOf: order.rateAsOf && timestampFromDate(order.rateAsOf),
    transactionId: order.transactionId,
    createTime: timestampFromDate(order.createTime),
  };
}
