import { AppError, type ErrorKind } from "@coinmesh/lib/errors";
import type { ClientCallOptions } from "@coinmesh/lib/grpc-client";

/** What a call to another service borrows from the incoming call (a CallContext fits). */
export interface Call {
  /** The caller's absolute deadline in epoch ms, if it set one. */
  readonly deadline?: number | undefined;
  readonly signal?: AbortSignal | undefined;
  /** Request id and trace context to forward. */
  readonly propagate?: Record<string, string> | undefined;
}

/**
 * Options for a call made on behalf of `call`: its deadline (capped by timeoutMs, so a missing or
 * generous deadline cannot hold a request forever), its cancellation and its trace metadata.
 */
export function callOptions(call: Call, timeoutMs: number): ClientCallOptions {
  return {
    deadline: call.deadline,
    timeoutMs,
    signal: call.signal,
    metadata: call.propagate,
  };
}

/**
 * Options for a call shared by concurrent callers (a lookup whose answer each of them awaits with
 * awaitShared): the cap alone bounds it, so that no caller's deadline or cancellation ends it for
 * the others. It carries the trace metadata of the caller that started it.
 */
export function sharedCallOptions(call: Call, timeoutMs: number): ClientCallOptions {
  return { timeoutMs, metadata: call.propagate };
}

const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Waits for a shared call until it settles or this caller's own deadline passes (UNAVAILABLE, as
 * for a dependency too slow) or it is cancelled; the shared call runs on for the other callers.
 */
export function awaitShared<T>(
  shared: Promise<T>,
  call: Call,
  what: string,
  reason: string,
): Promise<T> {
  const { deadline, signal } = call;
  if (deadline === undefined && !signal) return shared;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => finish(() => reject(signal?.reason));
    const onDeadline = () => {
      const late = new AppError("deadline_exceeded", "no answer within the call's deadline");
      finish(() => reject(dependencyFailure(late, what, reason)));
    };
    // setTimeout fires at once past 2^31 - 1 ms; the shared call ends long before that anyway.
    const timer =
      deadline === undefined
        ? undefined
        : setTimeout(onDeadline, Math.min(deadline - Date.now(), MAX_TIMER_MS));
    function finish(settle: () => void) {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      settle();
    }
    if (signal?.aborted) return onAbort();
    signal?.addEventListener("abort", onAbort, { once: true });
    shared.then(
      (value) => finish(() => resolve(value)),
      (err: unknown) => finish(() => reject(err)),
    );
  });
}

// A dependency that is down, slow or shedding load: the caller may retry later.
const TRANSIENT = new Set<ErrorKind>([
  "unavailable",
  "deadline_exceeded",
  "resource_exhausted",
  "cancelled",
  "aborted",
]);

/**
 * The error to return when a dependency failed: UNAVAILABLE for anything transient (nothing was
 * written, a retry may succeed); anything else is a fault between the services, so the caller
 * gets INTERNAL without its text and the cause is logged.
 */
export function dependencyFailure(err: unknown, what: string, reason: string): unknown {
  if (err instanceof AppError && TRANSIENT.has(err.kind)) {
    return new AppError(
      "unavailable",
      `${what} is unavailable: ${err.message}`,
      { reason, metadata: { cause: err.kind } },
      err,
    );
  }
  return new Error(`${what} failed`, { cause: err });
}

/**
 * Waits for every check and throws the first failure in argument order, so the error a caller
 * sees does not depend on which dependency answered first.
 */
export async function allInOrder<T extends readonly unknown[]>(
  checks: {
    [K in keyof T]: Promise<T[K]>;
  },
): Promise<T> {
  const settled = await Promise.allSettled(checks);
  for (const result of settled) if (result.status === "rejected") throw result.reason;
  return settled.map((r) => (r as PromiseFulfilledResult<unknown>).value) as unknown as T;
}
