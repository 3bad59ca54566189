import type { ServerHttp2Stream } from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";

// gRPC's wire format for one unary call on an http2 stream: a 5-byte envelope (flags, length)
// around each message, and the status in trailers. Errors read like connect-node's own.

const RESPONSE_HEADERS = { ":status": 200, "content-type": "application/grpc" };
const OK_TRAILERS = { "grpc-status": "0" };

/** Resolves with the request body; stops reading as soon as the declared size is too large. */
export function readBody(stream: ServerHttp2Stream, maxMessageBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let sizeChecked = false;
    const fail = (err: ConnectError) => {
      stream.off("data", onData);
      stream.pause();
      reject(err);
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      size += chunk.length;
      if (!sizeChecked && size >= 5) {
        sizeChecked = true;
        const declared = (chunks.length === 1 ? chunk : Buffer.concat(chunks)).readUInt32BE(1);
        if (declared > maxMessageBytes) {
          fail(
            new ConnectError(
              `message size ${declared} is larger than configured readMaxBytes ${maxMessageBytes}`,
              Code.ResourceExhausted,
            ),
          );
          return;
        }
      }
      if (size > maxMessageBytes + 5) {
        fail(
          new ConnectError(
            "protocol error: received extra input message for unary method",
            Code.Unimplemented,
          ),
        );
      }
    };
    const onClose = () => reject(new ConnectError("the client cancelled", Code.Canceled));
    stream.on("data", onData);
    stream.once("close", onClose);
    stream.once("end", () => {
      stream.off("close", onClose);
      resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks));
    });
  });
}

/** The one message of a unary request body, as connect-node's gRPC handler judges it. */
export function unwrap(body: Buffer): Buffer {
  if (body.length === 0) {
    throw new ConnectError(
      "protocol error: missing input message for unary method",
      Code.Unimplemented,
    );
  }
  if (body.length < 5)
    throw new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument);
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

export function respond(stream: ServerHttp2Stream, message: Uint8Array) {
  if (stream.destroyed) return;
  const frame = Buffer.allocUnsafe(5 + message.byteLength);
  frame[0] = 0;
  frame.writeUInt32BE(message.byteLength, 1);
  frame.set(message, 5);
  stream.respond(RESPONSE_HEADERS, { waitForTrailers: true });
  stream.once("wantTrailers", () => stream.sendTrailers(OK_TRAILERS));
  stream.end(frame);
}

/** A trailers-only response carrying the status, as gRPC allows for errors. */
export function respondError(stream: ServerHttp2Stream, error: ConnectError, bodyUnread: boolean) {
  if (stream.destroyed || stream.headersSent) return;
  const headers: Record<string, string | number> = { ...RESPONSE_HEADERS };
  setTrailerStatus(new Headers(), error).forEach((value, key) => {
    headers[key] = value;
  });
  stream.respond(headers, { endStream: true });
  // Stops a client still sending a body nobody will read.
  if (bodyUnread) stream.close();
}
