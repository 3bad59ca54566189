import http2, { type ClientHttp2Session, type IncomingHttpHeaders } from "node:http2";
import net from "node:net";
import { type DescMethod, fromBinary } from "@bufbuild/protobuf";
import { StatusSchema } from "@coinmesh/proto/google/rpc/status_pb";
import { Code, ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import {
  context,
  propagation,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import type { CallObserver } from "./grpc-service.ts";
import { STATUS_DETAILS_KEY } from "./status.ts";

/**
 * A gRPC client that forwards already-encoded messages: the bytes a caller sent go out as they
 * are and the backend's bytes come back undecoded, so a proxy pays for protobuf only where it
 * inspects a message. Errors become ConnectErrors that keep the backend's code, message,
 * google.rpc details (as raw Any payloads) and custom trailers, for a Connect server to relay.
 *
 * Unary calls are written straight on one long-lived node:http2 session per backend: a unary
 * gRPC exchange is one HEADERS frame, one framed message and trailers, and grpc-js's call stack
 * (filters, resolver, load balancer, retry machinery) around that costs more CPU than the rest
 * of a gateway call (bench/README.md). In the mesh the sidecar balances each request, so one
 * connection is what the pod should hold. Server streams, long-lived and few, use grpc-js.
 */
export interface Forwarder {
  unary(method: DescMethod, request: Uint8Array, options: ForwardOptions): Promise<Uint8Array>;
  serverStream(
    method: DescMethod,
    request: Uint8Array,
    options: ForwardOptions,
  ): AsyncIterable<Uint8Array>;
  close(): void;
}

export interface ForwardOptions {
  /** Absolute deadline in epoch ms; none means the call may run until cancelled. */
  deadline: number | undefined;
  /** Sent as request metadata; keys lower-case, text values only. */
  metadata: Record<string, string>;
  signal: AbortSignal;
}

export interface ForwarderOptions {
  /** Every method that will be forwarded. */
  methods: DescMethod[];
  observer?: CallObserver;
  maxReceiveMessageBytes?: number;
  /** OpenTelemetry is exporting: each unary call gets a CLIENT span, propagated to the backend. */
  tracing?: boolean;
}

const identity = (bytes: Buffer) => bytes;
const asBuffer = (bytes: Uint8Array) =>
  Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);

type MetadataEntries = Iterable<[key: string, value: string | Buffer | string[] | undefined]>;

/**
 * A backend's status as a ConnectError that a Connect handler can throw as is: code and message
 * unchanged, details taken from grpc-status-details-bin without decoding them, custom trailers
 * kept as metadata (grpc-*, pseudo-headers and content-type dropped, so no protocol header leaks
 * into the reply).
 */
export function connectErrorFromStatus(
  code: number,
  message: string,
  trailers: MetadataEntries,
): ConnectError {
  const metadata = new Headers();
  let details: { type: string; value: Uint8Array }[] = [];
  for (const [key, value] of trailers) {
    if (value === undefined || Array.isArray(value)) continue;
    if (key === STATUS_DETAILS_KEY) {
      try {
        const bytes = typeof value === "string" ? Buffer.from(value, "base64") : value;
        details = fromBinary(StatusSchema, bytes).details.map((any) => ({
          type: any.typeUrl.slice(any.typeUrl.lastIndexOf("/") + 1),
          value: any.value,
        }));
      } catch {
        // Undecodable details are dropped; code and message still reach the caller.
      }
    } else if (!key.startsWith("grpc-") && !key.startsWith(":") && !NOT_METADATA.has(key)) {
      metadata.set(
        key,
        Buffer.isBuffer(value) ? value.toString("base64").replace(/=+$/, "") : value,
      );
    }
  }
  const error = new ConnectError(
    message,
    code in Code && code !== 0 ? (code as Code) : Code.Unknown,
    metadata,
  );
  error.details = details;
  return error;
}

const NOT_METADATA = new Set(["content-type", "date", "te", "content-length"]);

/** A call our own signal cancelled ends with the signal's reason (a deadline, a shutdown). */
function cancelledByUs(signal: AbortSignal, code: number): ConnectError | undefined {
  return signal.aborted && code === Code.Canceled
    ? ConnectError.from(signal.reason, Code.Canceled)
    : undefined;
}

/** grpc-timeout: at most 8 digits and a unit. */
function encodeTimeout(ms: number): string {
  if (ms < 1e8) return `${Math.max(1, Math.ceil(ms))}m`;
  if (ms < 1e11) return `${Math.ceil(ms / 1e3)}S`;
  return `${Math.min(99_999_999, Math.ceil(ms / 3.6e6))}H`;
}

/** What a response without grpc-status means, by HTTP status (gRPC's http-grpc-status-mapping). */
function codeOfHttpStatus(status: number): Code {
  switch (status) {
    case 400:
      return Code.Internal;
    case 401:
      return Code.Unauthenticated;
    case 403:
      return Code.PermissionDenied;
    case 404:
      return Code.Unimplemented;
    case 429:
    case 502:
    case 503:
    case 504:
      return Code.Unavailable;
    default:
      return Code.Unknown;
  }
}

/** What a stream reset without a status means (as grpc-js reads RST_STREAM codes). */
function codeOfReset(rstCode: number): Code {
  switch (rstCode) {
    case http2.constants.NGHTTP2_REFUSED_STREAM:
      return Code.Unavailable;
    case http2.constants.NGHTTP2_CANCEL:
      return Code.Canceled;
    case http2.constants.NGHTTP2_ENHANCE_YOUR_CALM:
      return Code.ResourceExhausted;
    case http2.constants.NGHTTP2_INADEQUATE_SECURITY:
      return Code.PermissionDenied;
    default:
      return Code.Internal;
  }
}

function decodeMessage(raw: string | string[] | undefined): string {
  if (typeof raw !== "string") return "";
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

const KEEPALIVE_MS = 30_000;
const KEEPALIVE_TIMEOUT_MS = 10_000;
const tracer = () => trace.getTracer("coinmesh-forward");

/** One HTTP/2 session to a backend, opened on first use and again after it ends. */
function createSession(address: string) {
  const authority = address.replace(/^dns:(\/\/[^/]*\/)?/, "");
  const url = new URL(`http://${authority}`);
  let session: ClientHttp2Session | undefined;
  let lastError: Error | undefined;

  function open(): ClientHttp2Session {
    // A failure is reported with the reason of the session it happened on.
    lastError = undefined;
    const s = http2.connect(url, {
      settings: { enablePush: false },
      // Small frames go out at once: Nagle's algorithm would hold them for the peer's ACK.
      createConnection: () =>
        net.connect({
          host: url.hostname.replace(/^\[|\]$/g, ""),
          port: Number(url.port),
          noDelay: true,
        }),
    });
    const forget = () => {
      if (session === s) session = undefined;
    };
    s.on("error", (err) => {
      lastError = err;
      forget();
    });
    // After GOAWAY (a backend draining) new calls go to a new session; open ones finish here,
    // then the session closes.
    s.once("goaway", () => {
      forget();
      s.close();
    });
    s.once("close", () => {
      forget();
      clearInterval(keepalive);
    });
    // A dead peer (a silently dropped connection) is noticed, not left to each call's deadline.
    const keepalive = setInterval(() => {
      if (s.closed || s.destroyed) return;
      const timer = setTimeout(() => s.destroy(), KEEPALIVE_TIMEOUT_MS).unref();
      s.ping((err) => {
        clearTimeout(timer);
        if (err) s.destroy();
      });
    }, KEEPALIVE_MS).unref();
    // Only open calls keep the process alive.
    s.unref();
    return s;
  }

  return {
    authority,
    get(): ClientHttp2Session {
      if (session === undefined || session.closed || session.destroyed) session = open();
      return session;
    },
    lastError: () => lastError,
    close() {
      session?.close();
      session = undefined;
    },
  };
}

export function createForwarder(address: string, options: ForwarderOptions): Forwarder {
  const channel = new grpc.Client(address, grpc.credentials.createInsecure(), {
    // No retries here: in the cluster the mesh retries reads between proxy and backend
    // (istio/*.yaml), and a second retry layer would multiply attempts. It also costs per call.
    "grpc.enable_retries": 0,
    "grpc.keepalive_time_ms": KEEPALIVE_MS,
    "grpc.keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS,
    "grpc.max_receive_message_length": options.maxReceiveMessageBytes ?? 4 * 1024 * 1024,
  });
  const session = createSession(address);
  const maxReceive = options.maxReceiveMessageBytes ?? 4 * 1024 * 1024;
  const { observer } = options;
  const paths = new Map(options.methods.map((m) => [m, `/${m.parent.typeName}/${m.name}`]));
  const pathOf = (method: DescMethod) =>
    paths.get(method) ?? `/${method.parent.typeName}/${method.name}`;
  const callOptions = (o: ForwardOptions): grpc.CallOptions =>
    o.deadline === undefined ? {} : { deadline: o.deadline };
  const metadataOf = (o: ForwardOptions) => {
    const metadata = new grpc.Metadata();
    for (const key in o.metadata) metadata.set(key, o.metadata[key] as string);
    return metadata;
  };

  function unary(method: DescMethod, request: Uint8Array, o: ForwardOptions): Promise<Uint8Array> {
    const startedAt = performance.now();
    observer?.started(method);
    const path = pathOf(method);
    let span: Span | undefined;
    const headers: Record<string, string> = {
      ":method": "POST",
      ":scheme": "http",
      ":authority": session.authority,
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
      ...o.metadata,
    };
    if (options.tracing) {
      span = tracer().startSpan(`grpc.${path.slice(1)}`, {
        kind: SpanKind.CLIENT,
        attributes: {
          "rpc.system": "grpc",
          "rpc.service": method.parent.typeName,
          "rpc.method": method.name,
        },
      });
      propagation.inject(trace.setSpan(context.active(), span), headers);
    }

    return new Promise((resolve, reject) => {
      let connection: ClientHttp2Session | undefined;
      let stream: http2.ClientHttp2Stream | undefined;
      let timer: NodeJS.Timeout | undefined;
      let settled = false;
      const settle = (error: ConnectError | undefined, response?: Buffer) => {
        if (settled) return;
        settled = true;
        if (timer) clearTimeout(timer);
        o.signal.removeEventListener("abort", onAbort);
        const code: number = error ? error.code : grpc.status.OK;
        observer?.handled(method, code, (performance.now() - startedAt) / 1000);
        if (span) {
          span.setAttribute("rpc.grpc.status_code", code);
          if (error) span.setStatus({ code: SpanStatusCode.ERROR, message: error.rawMessage });
          span.end();
        }
        if (error) reject(error);
        else resolve(response as Buffer);
      };
      const cancel = (error: ConnectError) => {
        if (stream && !stream.destroyed) stream.close(http2.constants.NGHTTP2_CANCEL);
        settle(error);
      };
      const onAbort = () => cancel(ConnectError.from(o.signal.reason, Code.Canceled));
      if (o.signal.aborted) return onAbort();
      o.signal.addEventListener("abort", onAbort, { once: true });
      if (o.deadline !== undefined) {
        const remaining = o.deadline - Date.now();
        const expire = () => cancel(new ConnectError("deadline exceeded", Code.DeadlineExceeded));
        if (remaining <= 0) return expire();
        headers["grpc-timeout"] = encodeTimeout(remaining);
        timer = setTimeout(expire, remaining);
      }

      try {
        connection = session.get();
        stream = connection.request(headers);
      } catch (err) {
        const unavailable = (err as { code?: string }).code?.startsWith("ERR_HTTP2_") ?? false;
        return settle(
          new ConnectError(
            `${session.authority}: ${(err as Error).message}`,
            unavailable ? Code.Unavailable : Code.Internal,
          ),
        );
      }
      const chunks: Buffer[] = [];
      let received = 0;
      let status: IncomingHttpHeaders | undefined;
      let responded = false;
      stream.on("response", (head) => {
        responded = true;
        const httpStatus = head[":status"] ?? 0;
        if (httpStatus !== 200) {
          const code = head["grpc-status"] === undefined ? codeOfHttpStatus(httpStatus) : undefined;
          if (code !== undefined)
            cancel(new ConnectError(`HTTP ${httpStatus} from the backend`, code));
        }
        // A trailers-only response (an error) carries its status in the headers.
        if (head["grpc-status"] !== undefined) status = head;
      });
      stream.on("trailers", (trailers) => {
        status = trailers;
      });
      stream.on("data", (chunk: Buffer) => {
        received += chunk.length;
        if (received > maxReceive + 5) {
          cancel(
            new ConnectError(
              `response larger than the ${maxReceive}-byte limit`,
              Code.ResourceExhausted,
            ),
          );
          return;
        }
        chunks.push(chunk);
      });
      // Failures surface as "close" without a status; the reason is read there.
      stream.on("error", () => {});
      stream.once("close", () => {
        if (settled) return;
        if (status === undefined) {
          const rst = stream?.rstCode ?? 0;
          // The connection failed or went away before the backend answered: nothing was done.
          if (!responded && (connection.destroyed || connection.closed)) {
            const reason = session.lastError()?.message ?? "the connection closed";
            return settle(
              new ConnectError(`${session.authority} unavailable: ${reason}`, Code.Unavailable),
            );
          }
          return settle(
            new ConnectError(
              `the backend ended the call without a status (HTTP/2 code ${rst})`,
              codeOfReset(rst),
            ),
          );
        }
        const code = Number(status["grpc-status"]);
        if (code !== 0) {
          const error = connectErrorFromStatus(
            Number.isInteger(code) ? code : Code.Unknown,
            decodeMessage(status["grpc-message"]),
            Object.entries(status),
          );
          return settle(cancelledByUs(o.signal, error.code) ?? error);
        }
        const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
        if (body.length < 5 || body.length !== 5 + body.readUInt32BE(1)) {
          return settle(
            new ConnectError("the backend sent OK without exactly one message", Code.Internal),
          );
        }
        if ((body[0] as number) & 1) {
          return settle(
            new ConnectError("the backend sent a compressed message unasked", Code.Internal),
          );
        }
        settle(undefined, body.subarray(5));
      });
      const frame = Buffer.allocUnsafe(5 + request.byteLength);
      frame[0] = 0;
      frame.writeUInt32BE(request.byteLength, 1);
      frame.set(request, 5);
      stream.end(frame);
    });
  }

  return {
    close() {
      session.close();
      channel.close();
    },

    unary,

    async *serverStream(method, request, o) {
      const startedAt = performance.now();
      observer?.started(method);
      const call = channel.makeServerStreamRequest(
        pathOf(method),
        identity,
        identity,
        asBuffer(request),
        metadataOf(o),
        callOptions(o),
      );
      const cancel = () => call.cancel();
      o.signal.addEventListener("abort", cancel, { once: true });
      let code: grpc.status = grpc.status.OK;
      try {
        for await (const message of call) yield message as Buffer;
      } catch (err) {
        const status = err as grpc.ServiceError;
        code = status.code;
        throw (
          cancelledByUs(o.signal, status.code) ??
          connectErrorFromStatus(
            status.code,
            status.details,
            Object.entries(status.metadata.getMap()),
          )
        );
      } finally {
        o.signal.removeEventListener("abort", cancel);
        // Ends the call when the consumer stops early; a no-op after a normal end.
        call.cancel();
        observer?.handled(method, code, (performance.now() - startedAt) / 1000);
      }
    },
  };
}
