import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import {
  type Context,
  context,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  trace,
} from "@opentelemetry/api";

const headerGetter: TextMapGetter<Headers> = {
  keys: (headers) => [...headers.keys()],
  get: (headers, key) => headers.get(key) ?? undefined,
};

const tracer = () => trace.getTracer("coinmesh-gateway");

function finish(span: Span, err: unknown) {
  if (err === undefined) {
    span.setAttribute("rpc.grpc.status_code", 0 /* OK */);
  } else {
    const error = ConnectError.from(err);
    span.setAttribute("rpc.grpc.status_code", error.code);
    span.setAttribute("rpc.connect_rpc.error_code", Code[error.code] ?? "Unknown");
    span.setStatus({ code: SpanStatusCode.ERROR, message: error.rawMessage });
  }
  span.end();
}

/** Runs each step of a streamed response inside the span's context, ending the span at the end. */
async function* traced<T>(source: AsyncIterable<T>, span: Span, ctx: Context): AsyncGenerator<T> {
  const iterator = source[Symbol.asyncIterator]();
  let failure: unknown;
  try {
    while (true) {
      const step = await context.with(ctx, () => iterator.next());
      if (step.done) return;
      yield step.value;
    }
  } catch (err) {
    failure = err;
    throw err;
  } finally {
    finish(span, failure);
  }
}

/**
 * A Connect server interceptor that continues the caller's W3C trace (traceparent/tracestate)
 * with a SERVER span per RPC and makes it the active context for the handler, so the outbound
 * grpc-js calls it makes become children. Nothing instruments connect-node or http2 otherwise.
 */
export const tracingInterceptor: Interceptor = (next) => async (req) => {
  const parent = propagation.extract(ROOT_CONTEXT, req.header, headerGetter);
  const span = tracer().startSpan(
    `${req.service.typeName}/${req.method.name}`,
    {
      kind: SpanKind.SERVER,
      attributes: {
        "rpc.system": "connect_rpc",
        "rpc.service": req.service.typeName,
        "rpc.method": req.method.name,
      },
    },
    parent,
  );
  const ctx = trace.setSpan(parent, span);
  try {
    const res = await context.with(ctx, () => next(req));
    if (!res.stream) {
      finish(span, undefined);
      return res;
    }
    return { ...res, message: traced(res.message, span, ctx) };
  } catch (err) {
    finish(span, err);
    throw err;
  }
};
