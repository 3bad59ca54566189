import type { ServiceHandlers } from "@coinmesh/lib/grpc-service";
import type { AccountService } from "@coinmesh/proto/order/v1/account_pb";
import type { OrderService } from "@coinmesh/proto/order/v1/order_pb";
import type { Ledger } from "./ledger.ts";
import type { Orders } from "./orders.ts";

// The domain speaks protobuf messages already: mutating responses are stored as bytes and
// replayed byte for byte, so they are built where they are stored.

export function accountHandlers(ledger: Ledger): ServiceHandlers<typeof AccountService> {
  return {
    deposit: (req, ctx) => ledger.deposit(req, ctx),
    withdraw: (req, ctx) => ledger.withdraw(req, ctx),
    transfer: (req, ctx) => ledger.transfer(req, ctx),
    getBalances: (req, ctx) => ledger.getBalances(req, ctx),
    listTransactions: (req, ctx) => ledger.listTransactions(req, ctx),
  };
}

export function orderHandlers(orders: Orders): ServiceHandlers<typeof OrderService> {
  return {
    placeOrder: (req, ctx) => orders.placeOrder(req, ctx),
    getOrder: (req) => orders.getOrder(req),
    listOrders: (req, ctx) => orders.listOrders(req, ctx),
  };
}
