import { randomFillSync } from "node:crypto";
import { type DescMethod, type DescService, fromBinary, toBinary } from "@bufbuild/protobuf";
import { ADMIN_HEADER, REQUEST_ID_HEADER, SUBJECT_HEADER } from "@coinmesh/lib/call-context";
import type { Forwarder } from "@coinmesh/lib/grpc-forward";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Identity } from "./auth.ts";
import {
  type Access,
  authorizeRequest,
  authorizeResponse,
  concealNotFound,
} from "./authorization.ts";

/** Request headers by lower-case name: a fetch Headers, or a cheaper view of node's. */
export type HeaderReader = Pick<Headers, "get">;

/** One public call on its way to a backend, whatever protocol it came in. */
export interface ForwardCall {
  method: DescMethod;
  access: Access;
  identity: Identity | undefined;
  header: HeaderReader;
  signal: AbortSignal;
  /** The client's timeout, if it sent one. */
  timeoutMs: number | undefined;
}

export interface ForwardingDeps {
  backends: ReadonlyMap<DescService, Forwarder>;
  defaultTimeoutMs: number;
  maxTimeoutMs: number;
  /** A server stream's deadline: the client's timeout capped at this, or this when it sets none. */
  maxStreamDurationMs: number;
  /** Unary calls forwarded at once; past it, calls are refused at once instead of queueing. */
  maxInFlight: number;
}

// Random ids come from a pool filled in large blocks: one randomFillSync per call is costly.
const pool = Buffer.alloc(4096);
let poolOffset = pool.length;
function randomHex(bytes: number): string {
  if (poolOffset + bytes > pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  poolOffset += bytes;
  return pool.toString("hex", poolOffset - bytes, poolOffset);
}

/** A random version-4 UUID from the pool. */
function randomId(): string {
  const hex = randomHex(16);
  const variant = "89ab"[Number.parseInt(hex[16] as string, 16) & 3];
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-${variant}${hex.slice(17, 20)}-${hex.slice(20)}`;
}

// W3C trace context: version ff and all-zero ids are invalid too.
const TRACEPARENT = /^(?!ff)[\da-f]{2}-(?!0{32})[\da-f]{32}-(?!0{16})[\da-f]{16}-[\da-f]{2}$/;
const REQUEST_ID = /^[\w.:-]{1,128}$/;

/**
 * The metadata a backend gets: request id and W3C trace context (generated when the client
 * sent none or a malformed one), the canary pin, and the verified subject. Any other client
 * header (including an x-auth-* a client made up) stays at the edge.
 */
function outboundMetadata(header: HeaderReader, identity: Identity | undefined) {
  const requestId = header.get(REQUEST_ID_HEADER);
  const traceparent = header.get("traceparent");
  const metadata: Record<string, string> = {
    [REQUEST_ID_HEADER]: requestId && REQUEST_ID.test(requestId) ? requestId : randomId(),
  };
  if (traceparent && TRACEPARENT.test(traceparent)) {
    // With tracing on, the grpc-js instrumentation replaces this with the gateway's own span.
    metadata.traceparent = traceparent;
    const tracestate = header.get("tracestate");
    if (tracestate !== null) metadata.tracestate = tracestate;
  } else {
    // A new trace: the client's tracestate belongs to a traceparent we could not read, and the
    // W3C spec says to drop it with it.
    metadata.traceparent = `00-${randomHex(16)}-${randomHex(8)}-01`;
  }
  const canary = header.get("x-canary");
  if (canary !== null) metadata["x-canary"] = canary;
  if (identity) {
    metadata[SUBJECT_HEADER] = identity.subject;
    if (identity.admin) metadata[ADMIN_HEADER] = "true";
  }
  return metadata;
}

/**
 * Authorizes a call and forwards it to the backend that owns its service. Requests go out as
 * the bytes the client sent when the caller has them (no re-encoding); responses come back as
 * bytes, decoded here only when authorization must look inside.
 */
export function createForwarding({
  backends,
  defaultTimeoutMs,
  maxTimeoutMs,
  maxStreamDurationMs,
  maxInFlight,
}: ForwardingDeps) {
  let inFlight = 0;
  // One error for every refusal: under overload, building one (stack trace included) for each
  // refused call was 2.5% of the gateway's busy time.
  const atCapacity = new ConnectError(
    `the gateway is at capacity (${maxInFlight} calls in flight); retry with backoff`,
    Code.ResourceExhausted,
  );
  const backendOf = (method: DescMethod) => {
    const backend = backends.get(method.parent);
    if (!backend) throw new Error(`no backend for ${method.parent.typeName}`);
    return backend;
  };

  const unaryTimeoutMs = (clientTimeoutMs: number | undefined) =>
    Math.min(clientTimeoutMs ?? defaultTimeoutMs, maxTimeoutMs);

  return {
    /** How long a unary call may take, given the client's timeout (if it sent one). */
    unaryTimeoutMs,

    /** The refusal a new unary call gets right now, before any work is spent on it. */
    refusal(): ConnectError | undefined {
      return inFlight >= maxInFlight ? atCapacity : undefined;
    },

    async unary(
      call: ForwardCall,
      request: unknown,
      requestBytes?: Uint8Array,
    ): Promise<Uint8Array> {
      const { method, access, identity } = call;
      authorizeRequest(method, access, identity, request);
      // Under overload a quick refusal beats a queue in which every call misses its deadline.
      if (inFlight >= maxInFlight) throw atCapacity;
      const timeoutMs = unaryTimeoutMs(call.timeoutMs);
      let response: Uint8Array;
      inFlight++;
      try {
        response = await backendOf(method).unary(
          method,
          requestBytes ?? toBinary(method.input, request as never),
          {
            deadline: Date.now() + timeoutMs,
            metadata: outboundMetadata(call.header, identity),
            signal: call.signal,
          },
        );
      } catch (err) {
        throw concealNotFound(access, identity, request, err);
      } finally {
        inFlight--;
      }
      if (access.kind === "response-owner") {
        authorizeResponse(access, identity, request, fromBinary(method.output, response));
      }
      return response;
    },

    /**
     * Server streams are long-lived, so their bound is separate from unary calls': one that
     * reaches it ends DEADLINE_EXCEEDED, a clean status on which clients reconnect.
     */
    serverStream(call: ForwardCall, request: unknown): AsyncIterable<Uint8Array> {
      const { method, access, identity } = call;
      authorizeRequest(method, access, identity, request);
      const timeoutMs = Math.min(call.timeoutMs ?? maxStreamDurationMs, maxStreamDurationMs);
      return backendOf(method).serverStream(method, toBinary(method.input, request as never), {
        deadline: Date.now() + timeoutMs,
        metadata: outboundMetadata(call.header, identity),
        signal: call.signal,
      });
    },
  };
}

export type Forwarding = ReturnType<typeof createForwarding>;
