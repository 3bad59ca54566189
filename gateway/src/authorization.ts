import type { DescMessage, DescMethod, DescMethodUnary, MessageShape } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { AccountService } from "@coinmesh/proto/order/v1/account_pb";
import { OrderService } from "@coinmesh/proto/order/v1/order_pb";
import { RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Identity } from "./auth.ts";

/**
 * Who may call an RPC.
 * - public: anyone, with or without a token.
 * - admin: admins only.
 * - owner: the user id in a request field must be the caller's own; admins may also read
 *   (NO_SIDE_EFFECTS RPCs) anyone's, but write only their own.
 * - response-owner: the resource is only known after the call (GetOrder): forwarded, then
 *   NOT_FOUND unless its owner is the caller or the caller is an admin.
 */
export type Access =
  | { kind: "public" }
  | { kind: "admin" }
  | { kind: "owner"; field: string; owner: (request: unknown) => string }
  | {
      kind: "response-owner";
      owner: (response: unknown) => string;
      notFound: (request: unknown) => string;
    };

type Entry = [DescMethod, Access];
type Unary<I extends DescMessage, O extends DescMessage> = DescMethodUnary<I, O>;

const open = (method: DescMethod): Entry => [method, { kind: "public" }];
const admin = (method: DescMethod): Entry => [method, { kind: "admin" }];
function owner<I extends DescMessage, O extends DescMessage>(
  method: Unary<I, O>,
  field: string,
  read: (request: MessageShape<I>) => string,
): Entry {
  return [method, { kind: "owner", field, owner: read as (r: unknown) => string }];
}
function responseOwner<I extends DescMessage, O extends DescMessage>(
  method: Unary<I, O>,
  read: (response: MessageShape<O>) => string,
  notFound: (request: MessageShape<I>) => string,
): Entry {
  return [
    method,
    {
      kind: "response-owner",
      owner: read as (r: unknown) => string,
      notFound: notFound as (r: unknown) => string,
    },
  ];
}

/** Every public RPC, one line each. An RPC missing here is not served at all. */
export const accessTable: ReadonlyMap<DescMethod, Access> = new Map<DescMethod, Access>([
  open(UserService.method.createUser),
  owner(UserService.method.getUser, "id", (r) => r.id),
  admin(UserService.method.listUsers),
  owner(UserService.method.updateUser, "user.id", (r) => r.user?.id ?? ""),
  owner(AccountService.method.deposit, "user_id", (r) => r.userId),
  owner(AccountService.method.withdraw, "user_id", (r) => r.userId),
  owner(AccountService.method.transfer, "from_user_id", (r) => r.fromUserId),
  owner(AccountService.method.getBalances, "user_id", (r) => r.userId),
  owner(AccountService.method.listTransactions, "user_id", (r) => r.userId),
  owner(OrderService.method.placeOrder, "user_id", (r) => r.userId),
  responseOwner(
    OrderService.method.getOrder,
    (res) => res.order?.userId ?? "",
    (req) => `order ${req.id} not found`,
  ),
  owner(OrderService.method.listOrders, "user_id", (r) => r.userId),
  open(RateService.method.listCurrencies),
  open(RateService.method.getRate),
  open(RateService.method.getRates),
  open(RateService.method.watchRates),
]);

export const PUBLIC_SERVICES = [UserService, AccountService, OrderService, RateService];

const isRead = (method: DescMethod) =>
  method.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS;
// User ids are UUIDs, which compare case-insensitively.
const same = (a: string, b: string) => a.toLowerCase() === b;

/** True when the RPC needs a verified token before anything else happens. */
export const needsIdentity = (access: Access) => access.kind !== "public";

/**
 * Checks a decoded request against the caller. Another user's resource is NOT_FOUND on reads
 * and PERMISSION_DENIED on writes, decided before any backend is asked, so neither answer says
 * whether the resource exists.
 */
export function authorizeRequest(
  method: DescMethod,
  access: Access,
  identity: Identity | undefined,
  request: unknown,
): void {
  if (access.kind === "public" || access.kind === "response-owner") return;
  if (identity === undefined) {
    throw new ConnectError("this RPC needs an Authorization: Bearer token", Code.Unauthenticated);
  }
  if (access.kind === "admin") {
    if (!identity.admin)
      throw new ConnectError("this RPC needs an admin token", Code.PermissionDenied);
    return;
  }
  const target = access.owner(request);
  if (same(target, identity.subject)) return;
  if (isRead(method)) {
    if (identity.admin) return;
    throw new ConnectError(`${access.field} ${target} not found`, Code.NotFound);
  }
  throw new ConnectError(
    `${access.field} must be your own user id: you may only act for yourself`,
    Code.PermissionDenied,
  );
}

/** For response-owner RPCs: the resource of another user is reported exactly like a missing one. */
export function authorizeResponse(
  access: Access,
  identity: Identity | undefined,
  request: unknown,
  response: unknown,
): void {
  if (access.kind !== "response-owner" || identity?.admin) return;
  if (identity === undefined || !same(access.owner(response), identity.subject)) {
    throw new ConnectError(access.notFound(request), Code.NotFound);
  }
}

/** A backend NOT_FOUND of a response-owner RPC, reworded to match authorizeResponse's. */
export function concealNotFound(
  access: Access,
  identity: Identity | undefined,
  request: unknown,
  err: unknown,
): unknown {
  if (access.kind !== "response-owner" || identity?.admin) return err;
  return err instanceof ConnectError && err.code === Code.NotFound
    ? new ConnectError(access.notFound(request), Code.NotFound)
    : err;
}
