import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerHttp2Stream } from "node:http2";
import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  createMethodSerializationLookup,
  mergeNonProtocolHeaders,
} from "@connectrpc/connect/protocol";
import {
  codeToHttpStatus,
  errorToJsonBytes,
  parseTimeout as parseConnectTimeout,
  parseContentType,
} from "@connectrpc/connect/protocol-connect";
import {
  parseTimeout as parseGrpcTimeout,
  setTrailerStatus,
} from "@connectrpc/connect/protocol-grpc";
import { trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
import type { BodyDeadlines } from "./body-deadlines.ts";

/**
 * The three unary wire formats the fast path speaks on an http2 stream, each as connect-node's
 * own handler speaks it (same statuses and messages), so a client cannot tell the paths apart:
 * - gRPC: an enveloped message in, an enveloped message and trailers out.
 * - gRPC-web (binary): the same envelope in; out, the message and then the status as a
 *   trailer envelope in the body.
 * - Connect unary (binary or JSON): the bare message in and out; errors as JSON with an HTTP
 *   status.
 */
export interface Wire {
  /** Starts reading the whole request body, refusing it early when it is too large. */
  read(
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    deadlines: BodyDeadlines,
  ): IncomingBody;
  /** The request message's bytes inside the body. */
  unwrap(body: Buffer): Buffer;
  timeout(headers: IncomingHttpHeaders): { timeoutMs?: number; error?: ConnectError };
  /** The request message, and the bytes to forward when they are the body's own. */
  parse(method: DescMethod, bytes: Buffer): { message: unknown; forward: Uint8Array | undefined };
  /** Answers with the backend's response bytes. */
  respond(stream: ServerHttp2Stream, method: DescMethod, response: Uint8Array): void;
  respondError(stream: ServerHttp2Stream, error: ConnectError, bodyUnread: boolean): void;
}

const tooLarge = (size: number, max: number) =>
  new ConnectError(
    `message size ${size} is larger than configured readMaxBytes ${max}`,
    Code.ResourceExhausted,
  );

/** A request body on its way in. */
export interface IncomingBody {
  /**
   * The whole body, or why it was refused. One still arriving at `deadline` (performance.now()
   * ms) is given up with DEADLINE_EXCEEDED: a client that stalls or trickles its body holds a
   * stream no longer than its call may last.
   */
  by(deadline: number): Promise<Buffer>;
}

const refused = (error: ConnectError): IncomingBody => ({ by: () => Promise.reject(error) });

const late = () =>
  new ConnectError(
    "the request body did not arrive before the call's deadline",
    Code.DeadlineExceeded,
  );

/** Collects a body; `check` sees the first bytes and the running size and may refuse it. */
function collect(
  stream: ServerHttp2Stream,
  deadlines: BodyDeadlines,
  check: (first: Buffer, size: number) => ConnectError | undefined,
): IncomingBody {
  let settled = false;
  let fail: (error: ConnectError) => void = () => {};
  const body = new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const settle = () => {
      settled = true;
      deadlines.unwatch(incoming);
      stream.off("data", onData);
      stream.off("close", onClose);
    };
    fail = (error) => {
      if (settled) return;
      settle();
      stream.pause();
      reject(error);
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      size += chunk.length;
      const refusal = check(chunks.length === 1 ? chunk : Buffer.concat(chunks), size);
      if (refusal) fail(refusal);
    };
    const onClose = () => fail(new ConnectError("the client cancelled", Code.Canceled));
    stream.on("data", onData);
    stream.once("close", onClose);
    stream.once("end", () => {
      if (settled) return;
      settle();
      resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks));
    });
  });
  // Nobody may ask for the body (a call refused before it is read).
  body.catch(() => {});
  const incoming = {
    deadline: Number.POSITIVE_INFINITY,
    expire: () => fail(late()),
    by(deadline: number) {
      if (!settled) {
        incoming.deadline = deadline;
        deadlines.watch(incoming);
      }
      return body;
    },
  };
  return incoming;
}

/** An enveloped unary body (gRPC and gRPC-web), refused as soon as its declared size is too large. */
function readEnveloped(
  stream: ServerHttp2Stream,
  deadlines: BodyDeadlines,
  max: number,
): IncomingBody {
  let declaredChecked = false;
  return collect(stream, deadlines, (first, size) => {
    if (!declaredChecked && first.length >= 5) {
      declaredChecked = true;
      const declared = first.readUInt32BE(1);
      if (declared > max) {
        return new ConnectError(
          `message size ${declared} is larger than configured readMaxBytes ${max}`,
          Code.ResourceExhausted,
        );
      }
    }
    if (size > max + 5) {
      return new ConnectError(
        "protocol error: received extra input message for unary method",
        Code.Unimplemented,
      );
    }
    return undefined;
  });
}

/** The one message of an enveloped unary request body, as connect-node's handlers judge it. */
function unwrapEnvelope(body: Buffer): Buffer {
  if (body.length === 0) {
    throw new ConnectError(
      "protocol error: missing input message for unary method",
      Code.Unimplemented,
    );
  }
  if (body.length < 5) {
    throw new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument);
  }
  if ((body[0] as number) & 1) {
    throw new ConnectError(
      "received compressed envelope, but do not know how to decompress",
      Code.Internal,
    );
  }
  const length = body.readUInt32BE(1);
  if (body.length < 5 + length) {
    throw new ConnectError(
      `protocol error: promised ${length} bytes, received ${body.length - 5}`,
      Code.InvalidArgument,
    );
  }
  if (body.length > 5 + length) {
    throw new ConnectError(
      "protocol error: received extra input message for unary method",
      Code.Unimplemented,
    );
  }
  return body.subarray(5);
}

function envelope(flags: number, message: Uint8Array, into: Buffer, at: number) {
  into[at] = flags;
  into.writeUInt32BE(message.byteLength, at + 1);
  into.set(message, at + 5);
}

// Request and response serialization per method, as connect-node builds it (same errors).
const serializations = new WeakMap<
  DescMethod,
  ReturnType<typeof createMethodSerializationLookup>
>();
function serializationOf(method: DescMethod, maxBytes: number) {
  let lookup = serializations.get(method);
  if (!lookup) {
    lookup = createMethodSerializationLookup(method, undefined, undefined, {
      readMaxBytes: maxBytes,
      writeMaxBytes: 0xffffffff,
    });
    serializations.set(method, lookup);
  }
  return lookup;
}

const parseBinary = (maxBytes: number) => (method: DescMethod, bytes: Buffer) => ({
  message: serializationOf(method, maxBytes).getI(true).parse(bytes),
  forward: bytes,
});

function endWithError(stream: ServerHttp2Stream, headers: OutgoingHttpHeaders, body?: Uint8Array) {
  if (body === undefined) stream.respond(headers, { endStream: true });
  else {
    stream.respond(headers);
    stream.end(body);
  }
}

/** How gRPC and gRPC-web read a request: an envelope, the gRPC timeout, binary protobuf. */
const enveloped = (maxBytes: number): Pick<Wire, "read" | "unwrap" | "timeout" | "parse"> => ({
  read: (stream, _headers, deadlines) => readEnveloped(stream, deadlines, maxBytes),
  unwrap: unwrapEnvelope,
  timeout: (h) => parseGrpcTimeout((h["grpc-timeout"] as string | undefined) ?? null, Infinity),
  parse: parseBinary(maxBytes),
});

const GRPC_HEADERS = { ":status": 200, "content-type": "application/grpc" };
const GRPC_OK = { "grpc-status": "0" };

export function grpcWire(maxBytes: number): Wire {
  return {
    ...enveloped(maxBytes),
    respond(stream, _method, message) {
      if (stream.destroyed) return;
      const frame = Buffer.allocUnsafe(5 + message.byteLength);
      envelope(0, message, frame, 0);
      stream.respond(GRPC_HEADERS, { waitForTrailers: true });
      stream.once("wantTrailers", () => stream.sendTrailers(GRPC_OK));
      stream.end(frame);
    },
    /** A trailers-only response carrying the status, as gRPC allows for errors. */
    respondError(stream, error, bodyUnread) {
      if (stream.destroyed || stream.headersSent) return;
      const headers: OutgoingHttpHeaders = { ...GRPC_HEADERS };
      setTrailerStatus(new Headers(), error).forEach((value, key) => {
        headers[key] = value;
      });
      endWithError(stream, headers);
      // Stops a client still sending a body nobody will read.
      if (bodyUnread) stream.close();
    },
  };
}

const GRPC_WEB_HEADERS = { ":status": 200, "content-type": "application/grpc-web+proto" };
const GRPC_WEB_OK = trailerSerialize(new Headers(GRPC_OK));

export function grpcWebWire(maxBytes: number): Wire {
  return {
    ...enveloped(maxBytes),
    respond(stream, _method, message) {
      if (stream.destroyed) return;
      const body = Buffer.allocUnsafe(10 + message.byteLength + GRPC_WEB_OK.byteLength);
      envelope(0, message, body, 0);
      envelope(0x80, GRPC_WEB_OK, body, 5 + message.byteLength);
      stream.respond(GRPC_WEB_HEADERS);
      stream.end(body);
    },
    /** The status as a trailer envelope in the body, as connect-node answers gRPC-web errors. */
    respondError(stream, error, bodyUnread) {
      if (stream.destroyed || stream.headersSent) return;
      const trailer = trailerSerialize(setTrailerStatus(new Headers(), error));
      const body = Buffer.allocUnsafe(5 + trailer.byteLength);
      envelope(0x80, trailer, body, 0);
      endWithError(stream, GRPC_WEB_HEADERS, body);
      if (bodyUnread) stream.close();
    },
  };
}

const CONNECT_PROTO = { ":status": 200, "content-type": "application/proto" };
const CONNECT_JSON = { ":status": 200, "content-type": "application/json" };

export function connectWire(maxBytes: number, binary: boolean): Wire {
  return {
    read(stream, headers, deadlines) {
      const declared = Number(headers["content-length"] ?? 0);
      if (declared > maxBytes) return refused(tooLarge(declared, maxBytes));
      return collect(stream, deadlines, (_first, size) =>
        size > maxBytes ? tooLarge(size, maxBytes) : undefined,
      );
    },
    unwrap: (body) => body,
    timeout: (h) =>
      parseConnectTimeout((h["connect-timeout-ms"] as string | undefined) ?? null, Infinity),
    parse: binary
      ? parseBinary(maxBytes)
      : (method, bytes) => ({
          message: serializationOf(method, maxBytes).getI(false).parse(bytes),
          forward: undefined,
        }),
    respond(stream, method, response) {
      if (stream.destroyed) return;
      if (binary) {
        stream.respond(CONNECT_PROTO);
        stream.end(response);
        return;
      }
      const serialization = serializationOf(method, maxBytes);
      const json = serialization.getO(false).serialize(serialization.getO(true).parse(response));
      stream.respond(CONNECT_JSON);
      stream.end(json);
    },
    respondError(stream, error, bodyUnread) {
      if (stream.destroyed || stream.headersSent) return;
      const headers: OutgoingHttpHeaders = {
        ":status": codeToHttpStatus(error.code),
        "content-type": "application/json",
      };
      if (!error.isWireError) {
        const extra = new Headers();
        mergeNonProtocolHeaders(extra, error.metadata);
        extra.forEach((value, key) => {
          headers[key] = value;
        });
      }
      endWithError(stream, headers, errorToJsonBytes(error, {}));
      if (bodyUnread) stream.close();
    },
  };
}

/** The wire a request speaks, if the fast path serves it; undefined leaves it to connect-node. */
export function createWireSelector(maxBytes: number) {
  const grpc = grpcWire(maxBytes);
  const grpcWeb = grpcWebWire(maxBytes);
  const connectProto = connectWire(maxBytes, true);
  const connectJson = connectWire(maxBytes, false);
  return (headers: IncomingHttpHeaders): Wire | undefined => {
    const contentType = headers["content-type"];
    if (headers[":method"] !== "POST" || contentType === undefined) return undefined;
    switch (contentType) {
      case "application/grpc":
      case "application/grpc+proto":
        return identity(headers["grpc-encoding"]) ? grpc : undefined;
      case "application/grpc-web":
      case "application/grpc-web+proto":
        // Browsers: CORS is answered on connect-node's path.
        return identity(headers["grpc-encoding"]) && headers.origin === undefined
          ? grpcWeb
          : undefined;
    }
    const connect = parseContentType(contentType);
    if (connect === undefined || connect.stream) return undefined;
    if (!identity(headers["content-encoding"]) || headers.origin !== undefined) return undefined;
    return connect.binary ? connectProto : connectJson;
  };
}

const identity = (encoding: string | string[] | undefined) =>
  encoding === undefined || encoding === "identity";
