// Unary requests as bytes on the wire, for generators that must stay cheaper than the server
// they load (h2load, raw node:http2): each protocol's framing, and how each reports its status.
import type { IncomingHttpHeaders } from "node:http2";
import {
  create,
  type DescMessage,
  type DescMethodUnary,
  type MessageInitShape,
  toBinary,
  toJsonString,
} from "@bufbuild/protobuf";
import { codeName } from "@coinmesh/lib/status";

export const PROTOCOLS = ["grpc", "connect-proto", "connect-json", "grpc-web"] as const;
export type Protocol = (typeof PROTOCOLS)[number];

export interface WireRequest {
  protocol: Protocol;
  path: string;
  headers: Record<string, string>;
  body: Buffer;
}

/** The 5-byte length prefix of gRPC and gRPC-web messages (flags 0: data, uncompressed). */
export function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

const CONTENT_TYPE: Record<Protocol, string> = {
  grpc: "application/grpc",
  "connect-proto": "application/proto",
  "connect-json": "application/json",
  "grpc-web": "application/grpc-web+proto",
};

/** A gRPC request with an already encoded message, e.g. for the echo reference. */
export function rawGrpcRequest(path: string, message: Uint8Array): WireRequest {
  return {
    protocol: "grpc",
    path,
    headers: { "content-type": CONTENT_TYPE.grpc, te: "trailers" },
    body: grpcFrame(message),
  };
}

export function encodeRequest<I extends DescMessage, O extends DescMessage>(
  protocol: Protocol,
  method: DescMethodUnary<I, O>,
  init: MessageInitShape<I>,
  headers: Record<string, string> = {},
): WireRequest {
  const message = create(method.input, init);
  const path = `/${method.parent.typeName}/${method.name}`;
  const binary = () => toBinary(method.input, message);
  const body =
    protocol === "connect-json"
      ? Buffer.from(toJsonString(method.input, message))
      : protocol === "connect-proto"
        ? Buffer.from(binary())
        : grpcFrame(binary());
  const protocolHeaders: Record<string, string> =
    protocol === "grpc"
      ? { te: "trailers" }
      : protocol === "grpc-web"
        ? { "x-grpc-web": "1" }
        : { "connect-protocol-version": "1" };
  return {
    protocol,
    path,
    headers: { "content-type": CONTENT_TYPE[protocol], ...protocolHeaders, ...headers },
    body,
  };
}

export interface WireResponse {
  httpStatus: number;
  headers: IncomingHttpHeaders;
  trailers: IncomingHttpHeaders | undefined;
  /** The first few KB of the body: enough for an error or a gRPC-web trailer frame. */
  body: Buffer;
}

// The gRPC and Connect specs map HTTP statuses without a protocol status the same way.
function codeOfHttpStatus(status: number): string {
  if (status === 200) return "UNKNOWN";
  if (status === 401) return "UNAUTHENTICATED";
  if (status === 403) return "PERMISSION_DENIED";
  if (status === 404) return "UNIMPLEMENTED";
  if ([429, 502, 503, 504].includes(status)) return "UNAVAILABLE";
  if (status === 400) return "INTERNAL";
  return "UNKNOWN";
}

const grpcCode = (value: string | string[] | undefined) =>
  typeof value === "string" && /^\d+$/.test(value) ? codeName(Number(value)) : undefined;

/** grpc-web puts trailers in a final body frame whose flags byte has 0x80 set. */
function grpcWebTrailerStatus(body: Buffer): string | undefined {
  let offset = 0;
  while (offset + 5 <= body.length) {
    const flags = body[offset] ?? 0;
    const length = body.readUInt32BE(offset + 1);
    if (flags & 0x80) {
      const text = body.subarray(offset + 5, offset + 5 + length).toString();
      return grpcCode(/grpc-status:\s*(\d+)/i.exec(text)?.[1]);
    }
    offset += 5 + length;
  }
  return undefined;
}

/** The canonical status name ("OK", "RESOURCE_EXHAUSTED", ...) a response carries. */
export function statusOf(protocol: Protocol, response: WireResponse): string {
  if (protocol === "connect-proto" || protocol === "connect-json") {
    if (response.httpStatus === 200) return "OK";
    try {
      const code = (JSON.parse(response.body.toString()) as { code?: unknown }).code;
      if (typeof code === "string") return code.toUpperCase();
    } catch {
      // not a Connect error body
    }
    return codeOfHttpStatus(response.httpStatus);
  }
  const fromHeaders =
    grpcCode(response.trailers?.["grpc-status"]) ?? grpcCode(response.headers["grpc-status"]);
  if (fromHeaders) return fromHeaders;
  if (protocol === "grpc-web" && response.httpStatus === 200) {
    return grpcWebTrailerStatus(response.body) ?? "UNKNOWN";
  }
  return codeOfHttpStatus(response.httpStatus);
}
