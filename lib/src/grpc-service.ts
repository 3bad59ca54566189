import { randomUUID } from "node:crypto";
import { once } from "node:events";
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
import * as grpc from "@grpc/grpc-js";
import {
  ADMIN_HEADER,
  type CallContext,
  REQUEST_ID_HEADER,
  SUBJECT_HEADER,
} from "./call-context.ts";
import { AppError } from "./errors.ts";
import type { Logger } from "./log.ts";
import { toServiceError } from "./status.ts";

type UnaryHandler<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  ctx: CallContext,
) => Promise<MessageInitShape<O>>;

type StreamHandler<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  ctx: CallContext,
) => AsyncIterable<MessageInitShape<O>>;

/** One plain function per RPC of a protobuf-es service. */
export type ServiceHandlers<S extends DescService> = {
  [K in keyof S["method"]]: S["method"][K] extends DescMethodUnary<infer I, infer O>
    ? UnaryHandler<I, O>
    : S["method"][K] extends DescMethodServerStreaming<infer I, infer O>
      ? StreamHandler<I, O>
      : never;
};

/** Told about every call, for metrics. */
export interface CallObserver {
  started(method: DescMethod): void;
  handled(method: DescMethod, code: grpc.status, seconds: number): void;
}

export interface BindOptions {
  log: Logger;
  observer?: CallObserver;
  /** Aborts every open server stream; they end with UNAVAILABLE so clients reconnect elsewhere. */
  shutdownSignal?: AbortSignal;
}

export interface BoundService {
  definition: grpc.ServiceDefinition;
  implementation: grpc.UntypedServiceImplementation;
}

function serializer<O extends DescMessage>(schema: O) {
  return (value: MessageInitShape<O>): Buffer => {
    const message = isMessage(value, schema) ? value : create(schema, value);
    return Buffer.from(toBinary(schema, message as MessageShape<O>));
  };
}

function deserializer<I extends DescMessage>(schema: I) {
  return (bytes: Buffer): MessageShape<I> => fromBinary(schema, bytes);
}

/** Builds a grpc-js service definition and implementation from a protobuf-es service and handlers. */
export function bindService<S extends DescService>(
  service: S,
  handlers: ServiceHandlers<S>,
  options: BindOptions,
): BoundService {
  const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  const implementation: grpc.UntypedServiceImplementation = {};
  for (const method of service.methods) {
    const streaming = method.methodKind === "server_streaming";
    if (method.methodKind !== "unary" && !streaming) {
      throw new Error(`${method.name}: ${method.methodKind} RPCs are not supported`);
    }
    definition[method.name] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: false,
      responseStream: streaming,
      requestSerialize: serializer(method.input),
      requestDeserialize: deserializer(method.input),
      responseSerialize: serializer(method.output),
      responseDeserialize: deserializer(method.output),
      originalName: method.localName,
    } as grpc.MethodDefinition<unknown, unknown>;
    const handler = (handlers as Record<string, unknown>)[method.localName];
    if (typeof handler !== "function") throw new Error(`no handler for ${method.name}`);
    implementation[method.name] = streaming
      ? streamCall(method, handler as StreamHandler<DescMessage, DescMessage>, options)
      : unaryCall(method, handler as UnaryHandler<DescMessage, DescMessage>, options);
  }
  return { definition: definition as grpc.ServiceDefinition, implementation };
}

function first(metadata: grpc.Metadata, key: string): string | undefined {
  const value = metadata.get(key)[0];
  return typeof value === "string" ? value : undefined;
}

// Passed on to the calls a handler makes: request id, identity, trace context, and the canary
// pin, so `x-canary: always` reaches the canary of every hop behind the gateway.
const PROPAGATED = [
  REQUEST_ID_HEADER,
  SUBJECT_HEADER,
  ADMIN_HEADER,
  "traceparent",
  "tracestate",
  "x-canary",
];

const DEADLINE_SLACK_MS = 20;

/**
 * The per-call context. It is built on every call, so everything a handler may not need (the
 * abort controller, a request id, a child logger, propagated metadata) is made on first use.
 */
function createContext(
  call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>,
  method: DescMethod,
  log: Logger,
) {
  const metadata = call.metadata;
  let controller: AbortController | undefined;
  let abortReason: unknown;
  let requestId: string | undefined;
  let childLog: Logger | undefined;
  let propagate: Record<string, string> | undefined;
  const id = () => {
    requestId ??= first(metadata, REQUEST_ID_HEADER) ?? randomUUID();
    return requestId;
  };
  const deadline = call.getDeadline();
  const ctx: CallContext = {
    get signal() {
      if (!controller) {
        controller = new AbortController();
        if (abortReason !== undefined) controller.abort(abortReason);
      }
      return controller.signal;
    },
    deadline:
      deadline instanceof Date
        ? deadline.getTime()
        : Number.isFinite(deadline)
          ? deadline
          : undefined,
    get requestId() {
      return id();
    },
    subject: first(metadata, SUBJECT_HEADER),
    admin: first(metadata, ADMIN_HEADER) === "true",
    get log() {
      childLog ??= log.child({ rpc: `${method.parent.typeName}/${method.name}`, request_id: id() });
      return childLog;
    },
    get propagate() {
      if (!propagate) {
        propagate = { [REQUEST_ID_HEADER]: id() };
        for (const key of PROPAGATED) {
          const value = first(metadata, key);
          if (value !== undefined) propagate[key] = value;
        }
      }
      return propagate;
    },
  };
  const abort = (reason: unknown) => {
    if (abortReason !== undefined) return;
    abortReason = reason;
    controller?.abort(reason);
  };
  /** grpc-js cancels a call both when the client goes and when it has ended it at the deadline. */
  const cancelled = () => {
    // Its deadline timer runs on the event loop's clock, which can lag Date.now() a little.
    const expired = ctx.deadline !== undefined && Date.now() >= ctx.deadline - DEADLINE_SLACK_MS;
    abort(
      expired
        ? new AppError("deadline_exceeded", "deadline exceeded")
        : new AppError("cancelled", "call cancelled"),
    );
  };
  return { ctx, abort, cancelled };
}

function reportFailure(ctx: CallContext, err: unknown) {
  if (err instanceof AppError) {
    if (err.kind === "internal" || err.kind === "unavailable") ctx.log.warn({ err }, err.message);
  } else {
    ctx.log.error({ err }, "unexpected error");
  }
}

function unaryCall(
  method: DescMethod,
  handler: UnaryHandler<DescMessage, DescMessage>,
  { log, observer }: BindOptions,
): grpc.handleUnaryCall<MessageShape<DescMessage>, unknown> {
  return (call, callback) => {
    const startedAt = performance.now();
    observer?.started(method);
    const { ctx, cancelled } = createContext(call, method, log);
    let finished = false;
    // grpc-js may emit "cancelled" after a normal end; only a call still running is aborted.
    call.once("cancelled", () => {
      if (!finished) cancelled();
    });
    handler(call.request, ctx).then(
      (response) => {
        finished = true;
        callback(null, response);
        observer?.handled(method, grpc.status.OK, (performance.now() - startedAt) / 1000);
      },
      (err: unknown) => {
        finished = true;
        reportFailure(ctx, err);
        const error = toServiceError(err);
        callback(error);
        observer?.handled(method, error.code, (performance.now() - startedAt) / 1000);
      },
    );
  };
}

function streamCall(
  method: DescMethod,
  handler: StreamHandler<DescMessage, DescMessage>,
  { log, observer, shutdownSignal }: BindOptions,
): grpc.handleServerStreamingCall<MessageShape<DescMessage>, unknown> {
  return async (call) => {
    const startedAt = performance.now();
    observer?.started(method);
    const { ctx, abort, cancelled } = createContext(call, method, log);
    let finished = false;
    const onShutdown = () => abort(new AppError("unavailable", "server is shutting down"));
    shutdownSignal?.addEventListener("abort", onShutdown, { once: true });
    call.once("cancelled", () => {
      if (!finished) cancelled();
    });
    let code: grpc.status = grpc.status.OK;
    try {
      if (shutdownSignal?.aborted) onShutdown();
      for await (const message of handler(call.request, ctx)) {
        if (ctx.signal.aborted) break;
        if (!call.write(message)) await once(call, "drain", { signal: ctx.signal });
      }
      if (ctx.signal.aborted) throw ctx.signal.reason;
      call.end();
    } catch (err) {
      const error = toServiceError(ctx.signal.aborted ? ctx.signal.reason : err);
      code = error.code;
      if (!call.cancelled && !ctx.signal.aborted) reportFailure(ctx, err);
      // Also on a cancelled call: nothing reaches the gone client, but the call (and the
      // tracing span that watches it) learns that it ended.
      call.emit("error", error);
    } finally {
      finished = true;
      shutdownSignal?.removeEventListener("abort", onShutdown);
      observer?.handled(method, code, (performance.now() - startedAt) / 1000);
    }
  };
}
