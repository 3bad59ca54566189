import {
  create,
  type DescMessage,
  type DescMethod,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  type DescService,
  fromBinary,
  isMessage,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { AppError } from "./errors.ts";
import type { CallObserver } from "./grpc-service.ts";
import { codeName, detailsOfStatus, kindOfCode } from "./status.ts";

export interface ClientCallOptions {
  /** Absolute deadline in epoch ms; the earlier of this and timeoutMs wins. */
  deadline?: number;
  timeoutMs?: number;
  signal?: AbortSignal;
  metadata?: Record<string, string>;
}

/** A promise-based client of a protobuf-es service over grpc-js. */
export type ServiceClient<S extends DescService> = {
  [K in keyof S["method"]]: S["method"][K] extends DescMethodUnary<infer I, infer O>
    ? (request: MessageInitShape<I>, options?: ClientCallOptions) => Promise<MessageShape<O>>
    : S["method"][K] extends DescMethodServerStreaming<infer I, infer O>
      ? (
          request: MessageInitShape<I>,
          options?: ClientCallOptions,
        ) => AsyncIterable<MessageShape<O>>
      : never;
};

export interface ClientOptions {
  observer?: CallObserver;
  /** Default timeout when a call gives neither deadline nor timeoutMs. */
  defaultTimeoutMs?: number;
}

/**
 * grpc-js retries NO_SIDE_EFFECTS methods on UNAVAILABLE (a replica going away, a reset
 * connection); writes are never retried here — their idempotency keys make a caller's retry safe.
 */
function serviceConfig(service: DescService) {
  const reads = service.methods.filter(
    (m) => m.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS,
  );
  return JSON.stringify({
    loadBalancingConfig: [{ round_robin: {} }],
    methodConfig: reads.length
      ? [
          {
            name: reads.map((m) => ({ service: service.typeName, method: m.name })),
            retryPolicy: {
              maxAttempts: 3,
              initialBackoff: "0.05s",
              maxBackoff: "0.5s",
              backoffMultiplier: 2,
              retryableStatusCodes: ["UNAVAILABLE"],
            },
          },
        ]
      : [],
  });
}

/** Turns a grpc-js error from another service into an AppError of the same kind. */
export function fromServiceError(err: grpc.ServiceError, method: DescMethod): AppError {
  return new AppError(
    kindOfCode(err.code),
    `${method.parent.name}.${method.name}: ${err.details || codeName(err.code)}`,
    detailsOfStatus(err.metadata),
    err,
  );
}

export function createServiceClient<S extends DescService>(
  service: S,
  address: string,
  options: ClientOptions = {},
): { client: ServiceClient<S>; close(): void; channel: grpc.Client } {
  const channel = new grpc.Client(address, grpc.credentials.createInsecure(), {
    "grpc.service_config": serviceConfig(service),
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.enable_retries": 1,
  });
  const client: Record<string, unknown> = {};
  for (const method of service.methods) {
    const path = `/${service.typeName}/${method.name}`;
    const serialize = (value: MessageInitShape<DescMessage>) =>
      Buffer.from(
        toBinary(
          method.input,
          isMessage(value, method.input) ? value : create(method.input, value),
        ),
      );
    const deserialize = (bytes: Buffer) => fromBinary(method.output, bytes);
    const callOptions = (o: ClientCallOptions): grpc.CallOptions => {
      const timeout =
        o.timeoutMs ?? (o.deadline === undefined ? options.defaultTimeoutMs : undefined);
      const fromTimeout = timeout === undefined ? undefined : Date.now() + timeout;
      const deadline =
        o.deadline === undefined ? fromTimeout : Math.min(o.deadline, fromTimeout ?? Infinity);
      return deadline === undefined ? {} : { deadline };
    };
    const metadataOf = (o: ClientCallOptions) => {
      const metadata = new grpc.Metadata();
      for (const [key, value] of Object.entries(o.metadata ?? {})) metadata.set(key, value);
      return metadata;
    };
    if (method.methodKind === "unary") {
      client[method.localName] = (
        request: MessageInitShape<DescMessage>,
        o: ClientCallOptions = {},
      ) =>
        new Promise((resolve, reject) => {
          const startedAt = performance.now();
          options.observer?.started(method);
          const call = channel.makeUnaryRequest(
            path,
            serialize,
            deserialize,
            request,
            metadataOf(o),
            callOptions(o),
            (err, response) => {
              o.signal?.removeEventListener("abort", cancel);
              options.observer?.handled(
                method,
                err ? err.code : grpc.status.OK,
                (performance.now() - startedAt) / 1000,
              );
              if (err) reject(fromServiceError(err, method));
              else resolve(response);
            },
          );
          const cancel = () => call.cancel();
          if (o.signal?.aborted) cancel();
          else o.signal?.addEventListener("abort", cancel, { once: true });
        });
    } else if (method.methodKind === "server_streaming") {
      client[method.localName] = (
        request: MessageInitShape<DescMessage>,
        o: ClientCallOptions = {},
      ) =>
        (async function* () {
          const call = channel.makeServerStreamRequest(
            path,
            serialize,
            deserialize,
            request,
            metadataOf(o),
            callOptions(o),
          );
          const cancel = () => call.cancel();
          o.signal?.addEventListener("abort", cancel, { once: true });
          try {
            for await (const message of call) yield message;
          } catch (err) {
            throw fromServiceError(err as grpc.ServiceError, method);
          } finally {
            o.signal?.removeEventListener("abort", cancel);
            call.cancel();
          }
        })();
    }
  }
  return { client: client as ServiceClient<S>, close: () => channel.close(), channel };
}
