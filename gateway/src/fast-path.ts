import type { IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import { type DescMethod, fromBinary } from "@bufbuild/protobuf";
import type { CallObserver } from "@coinmesh/lib/grpc-service";
import type { Logger } from "@coinmesh/lib/log";
import {
  Code,
  ConnectError,
  createContextKey,
  createContextValues,
  type Interceptor,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import type { Admission } from "./admission.ts";
import type { Access } from "./authorization.ts";
import { createBodyDeadlines } from "./body-deadlines.ts";
import type { ForwardCall, Forwarding, HeaderReader } from "./forward.ts";
import { createWireSelector, type Wire } from "./wires.ts";

/**
 * Unary calls over HTTP/2 in gRPC, gRPC-web (binary) and Connect (binary and JSON) served
 * straight on the http2 stream instead of through connect-node's generic pipeline, which costs
 * several times what a grpc-js server does per call (gateway/README.md, Performance). Binary
 * request bytes go to the backend as received and the backend's bytes come back as they are.
 * Admission, authorization, forwarding and the Connect interceptors are the same as on the
 * Connect path; protocol errors mirror connect-node's handlers (wires.ts). Anything else
 * (HTTP/1.1, Connect GET, compression, gRPC-web text, browsers' CORS, streams) is left to
 * connect-node.
 */
export interface FastPathDeps {
  routes: ReadonlyMap<DescMethod, Access>;
  admission: Admission;
  forwarding: Forwarding;
  interceptors: Interceptor[];
  /** Counts calls refused before they reach the interceptors. */
  observer: CallObserver;
  maxMessageBytes: number;
  log: Logger;
}

interface FastCall {
  call: ForwardCall;
  /** The request's bytes when they can be forwarded as they are. */
  forward: Uint8Array | undefined;
}

const RAW = Symbol("raw response bytes");
const fastCallKey = createContextKey<FastCall | undefined>(undefined, { description: "fast" });

/** Node's headers read like fetch Headers, without building one (undici's validates each). */
function headerReader(headers: IncomingHttpHeaders): HeaderReader {
  return {
    get(name) {
      const value = headers[name];
      return value === undefined ? null : Array.isArray(value) ? value.join(", ") : value;
    },
  };
}

function webHeaders(headers: IncomingHttpHeaders): Headers {
  const out = new Headers();
  for (const key in headers) {
    if (key.charCodeAt(0) === 58 /* ":" */) continue;
    const value = headers[key];
    if (value !== undefined) out.append(key, Array.isArray(value) ? value.join(", ") : value);
  }
  return out;
}

export function createFastPath(deps: FastPathDeps) {
  const { admission, forwarding, log } = deps;
  const wireOf = createWireSelector(deps.maxMessageBytes);
  // A stalled body is noticed within this of its call's deadline.
  const bodyDeadlines = createBodyDeadlines(100);
  const routes = new Map<string, [DescMethod, Access]>();
  for (const [method, access] of deps.routes) {
    if (method.methodKind === "unary") {
      routes.set(`/${method.parent.typeName}/${method.name}`, [method, access]);
    }
  }

  // The innermost step of the interceptor chain, composed once: forward the received bytes.
  const forward = async (req: UnaryRequest): Promise<UnaryResponse> => {
    const fast = req.contextValues.get(fastCallKey) as FastCall;
    const bytes = await forwarding.unary(fast.call, req.message, fast.forward);
    let message: unknown;
    return {
      stream: false,
      service: req.service,
      method: req.method,
      header: new Headers(),
      trailer: new Headers(),
      [RAW]: bytes,
      // Decoded only if an interceptor looks; the client gets the backend's bytes.
      get message() {
        message ??= fromBinary(req.method.output, bytes);
        return message;
      },
    } as UnaryResponse;
  };
  const chain = deps.interceptors.reduceRight(
    (next, interceptor) => interceptor(next as never) as typeof forward,
    forward,
  );

  async function handle(
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    wire: Wire,
    [method, access]: [DescMethod, Access],
    peer: string | undefined,
  ) {
    const arrivedAt = performance.now();
    const controller = new AbortController();
    let finished = false;
    let bodyRead = false;
    stream.once("close", () => {
      if (!finished) controller.abort(new ConnectError("the client cancelled", Code.Canceled));
    });
    // Read from the start: an http2 stream that ends before anyone listens never says "end".
    const received = wire.read(stream, headers, bodyDeadlines);
    try {
      const header = headerReader(headers);
      const identity = await admission.admit(method, access, header, peer);
      const timeout = wire.timeout(headers);
      if (timeout.error) throw timeout.error;
      // The call's deadline runs from its headers and covers the wait for its body.
      const timeoutMs = forwarding.unaryTimeoutMs(timeout.timeoutMs);
      const body = wire.unwrap(await received.by(arrivedAt + timeoutMs));
      bodyRead = true;
      const { message: request, forward } = wire.parse(method, body);
      const call: ForwardCall = {
        method,
        access,
        identity,
        header,
        signal: controller.signal,
        timeoutMs: Math.max(0, timeoutMs - (performance.now() - arrivedAt)),
      };
      const contextValues = createContextValues().set(fastCallKey, { call, forward });
      let webHeader: Headers | undefined;
      const res = await chain({
        stream: false,
        service: method.parent,
        method,
        requestMethod: "POST",
        url: `http://${headers[":authority"] ?? "gateway"}${headers[":path"]}`,
        signal: controller.signal,
        // Built only for an interceptor that reads it.
        get header() {
          webHeader ??= webHeaders(headers);
          return webHeader;
        },
        contextValues,
        message: request,
      } as UnaryRequest);
      wire.respond(stream, method, (res as unknown as { [RAW]: Uint8Array })[RAW]);
    } catch (err) {
      if (!(err instanceof ConnectError)) log.error({ err, rpc: method.name }, "unexpected error");
      const error =
        err instanceof ConnectError ? err : new ConnectError("internal error", Code.Internal);
      wire.respondError(stream, error, !bodyRead);
    } finally {
      finished = true;
    }
  }

  return {
    /** Takes the stream and returns true if it is a call this path serves; false leaves it alone. */
    serve(
      stream: ServerHttp2Stream,
      headers: IncomingHttpHeaders,
      peer: string | undefined,
    ): boolean {
      const wire = wireOf(headers);
      const route = wire && routes.get(headers[":path"] as string);
      if (route === undefined || wire === undefined) return false;
      // A reset by the client surfaces here; the call's signal already reports it.
      stream.on("error", () => {});
      // At capacity the call is refused before its body is read or its token verified.
      const refusal = forwarding.refusal();
      if (refusal) {
        deps.observer.started(route[0]);
        deps.observer.handled(route[0], refusal.code as number, 0);
        wire.respondError(stream, refusal, true);
        return true;
      }
      void handle(stream, headers, wire, route, peer);
      return true;
    },
  };
}
