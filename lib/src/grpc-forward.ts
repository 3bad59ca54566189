import { type DescMethod, fromBinary } from "@bufbuild/protobuf";
import { StatusSchema } from "@coinmesh/proto/google/rpc/status_pb";
import { Code, ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import type { CallObserver } from "./grpc-service.ts";
import { STATUS_DETAILS_KEY } from "./status.ts";

/**
 * A grpc-js client that forwards already-encoded messages: the bytes a caller sent go out as
 * they are and the backend's bytes come back undecoded, so a proxy pays for protobuf only where
 * it inspects a message. Errors become ConnectErrors that keep the backend's code, message,
 * google.rpc details (as raw Any payloads) and custom trailers, for a Connect server to relay.
 */
export interface Forwarder {
  unary(method: DescMethod, request: Uint8Array, options: ForwardOptions): Promise<Uint8Array>;
  serverStream(
    method: DescMethod,
    request: Uint8Array,
    options: ForwardOptions,
  ): AsyncIterable<Uint8Array>;
  channel: grpc.Client;
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
}

const identity = (bytes: Buffer) => bytes;
const asBuffer = (bytes: Uint8Array) =>
  Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);

/**
 * A backend's status as a ConnectError that a Connect handler can throw as is: code and message
 * unchanged, details taken from grpc-status-details-bin without decoding them, custom trailers
 * kept as metadata (grpc-* and content-type dropped, so no protocol header leaks into the reply).
 */
export function connectErrorFromStatus(status: grpc.StatusObject): ConnectError {
  const metadata = new Headers();
  let details: { type: string; value: Uint8Array }[] = [];
  for (const [key, values] of Object.entries(status.metadata.getMap())) {
    if (key === STATUS_DETAILS_KEY) {
      try {
        details = fromBinary(StatusSchema, asBuffer(values as Buffer)).details.map((any) => ({
          type: any.typeUrl.slice(any.typeUrl.lastIndexOf("/") + 1),
          value: any.value,
        }));
      } catch {
        // Undecodable details are dropped; code and message still reach the caller.
      }
    } else if (!key.startsWith("grpc-") && key !== "content-type") {
      metadata.set(
        key,
        Buffer.isBuffer(values) ? values.toString("base64").replace(/=+$/, "") : values,
      );
    }
  }
  const code: Code =
    status.code in Code && status.code !== 0 ? (status.code as number) : Code.Unknown;
  const error = new ConnectError(status.details, code, metadata);
  error.details = details;
  return error;
}

/** A call our own signal cancelled ends with the signal's reason (a deadline, a shutdown). */
function cancelledByUs(signal: AbortSignal, status: grpc.StatusObject): ConnectError | undefined {
  return signal.aborted && status.code === grpc.status.CANCELLED
    ? ConnectError.from(signal.reason, Code.Canceled)
    : undefined;
}

export function createForwarder(address: string, options: ForwarderOptions): Forwarder {
  const channel = new grpc.Client(address, grpc.credentials.createInsecure(), {
    // No retries here: in the cluster the mesh retries reads between proxy and backend
    // (istio/*.yaml), and a second retry layer would multiply attempts. It also costs per call.
    "grpc.enable_retries": 0,
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.max_receive_message_length": options.maxReceiveMessageBytes ?? 4 * 1024 * 1024,
  });
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

  return {
    channel,
    close: () => channel.close(),

    unary(method, request, o) {
      return new Promise((resolve, reject) => {
        const startedAt = performance.now();
        observer?.started(method);
        if (o.signal.aborted) {
          reject(ConnectError.from(o.signal.reason, Code.Canceled));
          return;
        }
        const call = channel.makeUnaryRequest(
          pathOf(method),
          identity,
          identity,
          asBuffer(request),
          metadataOf(o),
          callOptions(o),
          (err, response) => {
            o.signal.removeEventListener("abort", cancel);
            observer?.handled(
              method,
              err ? err.code : grpc.status.OK,
              (performance.now() - startedAt) / 1000,
            );
            if (err) reject(cancelledByUs(o.signal, err) ?? connectErrorFromStatus(err));
            else resolve(response as Buffer);
          },
        );
        const cancel = () => call.cancel();
        o.signal.addEventListener("abort", cancel, { once: true });
      });
    },

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
        throw cancelledByUs(o.signal, status) ?? connectErrorFromStatus(status);
      } finally {
        o.signal.removeEventListener("abort", cancel);
        // Ends the call when the consumer stops early; a no-op after a normal end.
        call.cancel();
        observer?.handled(method, code, (performance.now() - startedAt) / 1000);
      }
    },
  };
}
