import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { type DescMethod, fromBinary } from "@bufbuild/protobuf";
import { base64Decode } from "@bufbuild/protobuf/wire";
import { Health } from "@coinmesh/proto/grpc/health/v1/health_pb";
import { ServerReflection } from "@coinmesh/proto/grpc/reflection/v1/reflection_pb";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  createContextKey,
  type HandlerContext,
  type MethodImpl,
} from "@connectrpc/connect";
import {
  codeToHttpStatus,
  errorToJsonBytes,
  parseTimeout as parseConnectTimeout,
} from "@connectrpc/connect/protocol-connect";
import { parseTimeout as parseGrpcTimeout } from "@connectrpc/connect/protocol-grpc";
import type { Admission } from "./admission.ts";
import type { Identity } from "./auth.ts";
import { type Access, accessTable, PUBLIC_SERVICES } from "./authorization.ts";
import type { ForwardCall, Forwarding } from "./forward.ts";
import type { GatewayHealth } from "./health.ts";
import { reflectionHandlers } from "./reflection.ts";

/** The client's socket address, set by the node adapter for rate limiting anonymous callers. */
export const peerKey = createContextKey<string | undefined>(undefined, { description: "peer" });
const identityKey = createContextKey<Identity | undefined>(undefined, { description: "identity" });

export interface RouteDeps {
  admission: Admission;
  forwarding: Forwarding;
  health: GatewayHealth;
}

function callOf(method: DescMethod, access: Access, ctx: HandlerContext): ForwardCall {
  return {
    method,
    access,
    identity: ctx.values.get(identityKey),
    header: ctx.requestHeader,
    signal: ctx.signal,
    timeoutMs: ctx.timeoutMs(),
  };
}

/** A Connect implementation that authorizes and forwards one public RPC. */
function forwarded(method: DescMethod, access: Access, forwarding: Forwarding) {
  if (method.methodKind === "server_streaming") {
    return async function* (request: unknown, ctx: HandlerContext) {
      for await (const bytes of forwarding.serverStream(callOf(method, access, ctx), request)) {
        yield fromBinary(method.output, bytes);
      }
    };
  }
  return async (request: unknown, ctx: HandlerContext) =>
    fromBinary(method.output, await forwarding.unary(callOf(method, access, ctx), request));
}

/**
 * Shortens a client's timeout to capMs before connect-node reads it. connect-node arms a timer
 * with the client's timeout as sent, and Node fires a timer past 2^31 - 1 ms (about 24.8 days)
 * at once: such a call failed DEADLINE_EXCEEDED at once instead of being capped, as the fast path
 * does. capMs is at least every cap applied later, so nothing else changes.
 */
export function capClientTimeout(headers: IncomingHttpHeaders, capMs: number): void {
  const grpc = headers["grpc-timeout"];
  if (typeof grpc === "string" && (parseGrpcTimeout(grpc, Infinity).timeoutMs ?? 0) > capMs) {
    headers["grpc-timeout"] = `${capMs}m`;
  }
  const connect = headers["connect-timeout-ms"];
  if (
    typeof connect === "string" &&
    (parseConnectTimeout(connect, Infinity).timeoutMs ?? 0) > capMs
  ) {
    headers["connect-timeout-ms"] = String(capMs);
  }
}

/**
 * Refuses a Connect GET whose `message` is not base64 although `base64=1` says it is, with
 * INVALID_ARGUMENT as any other message that does not parse; connect-node answers it INTERNAL
 * (HTTP 500), as if the gateway had failed. True when it answered.
 */
export function refuseUndecodableGet(
  req: IncomingMessage | Http2ServerRequest,
  res: ServerResponse | Http2ServerResponse,
): boolean {
  if (req.method !== "GET" || !req.url?.includes("base64=1")) return false;
  const query = new URLSearchParams(req.url.slice(req.url.indexOf("?") + 1));
  if (query.get("base64") !== "1") return false;
  try {
    base64Decode(query.get("message") ?? "");
    return false;
  } catch {
    const error = new ConnectError(
      "the message query parameter is not base64",
      Code.InvalidArgument,
    );
    (res as ServerResponse).writeHead(codeToHttpStatus(error.code), {
      "content-type": "application/json",
    });
    res.end(errorToJsonBytes(error, {}));
    return true;
  }
}

/**
 * Every RPC the gateway serves over Connect, gRPC-web and gRPC: the public RPCs of the access
 * table, each behind a request gate that admits the caller before its body is read, plus the
 * gateway's own health and reflection.
 */
export function gatewayRoutes({ admission, forwarding, health }: RouteDeps) {
  return (router: ConnectRouter) => {
    for (const [method, access] of accessTable) {
      router.rpc(method, forwarded(method, access, forwarding) as MethodImpl<DescMethod>, {
        async requestGate(ctx) {
          const identity = await admission.admit(
            method,
            access,
            ctx.requestHeader,
            ctx.values.get(peerKey),
          );
          ctx.values.set(identityKey, identity);
        },
      });
    }
    router.service(Health, health.handlers);
    router.service(
      ServerReflection,
      reflectionHandlers([...PUBLIC_SERVICES, Health, ServerReflection]),
    );
  };
}
