import { ConnectError, type Interceptor } from "@connectrpc/connect";
import type { CallObserver } from "./grpc-service.ts";

// Connect has no code for success; gRPC's is 0.
const OK = 0;

/**
 * A Connect server interceptor that reports every call to a CallObserver (the `grpc_server_*`
 * family from metrics.ts), so a Connect server is measured like the grpc-js ones. Connect
 * codes are the gRPC codes, so they pass through as they are. Streams are measured to their end.
 */
export function metricsInterceptor(observer: CallObserver): Interceptor {
  return (next) => async (req) => {
    const startedAt = performance.now();
    const done = (err: unknown) =>
      observer.handled(
        req.method,
        err === undefined ? OK : (ConnectError.from(err).code as number),
        (performance.now() - startedAt) / 1000,
      );
    observer.started(req.method);
    try {
      const res = await next(req);
      if (!res.stream) {
        done(undefined);
        return res;
      }
      return { ...res, message: measured(res.message, done) };
    } catch (err) {
      done(err);
      throw err;
    }
  };
}

async function* measured<T>(source: AsyncIterable<T>, done: (err: unknown) => void) {
  let failure: unknown;
  try {
    yield* source;
  } catch (err) {
    failure = err;
    throw err;
  } finally {
    done(failure);
  }
}
