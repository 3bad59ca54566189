import type { Logger } from "./log.ts";

/** Metadata keys the gateway sets after verifying a caller; backends trust them (mTLS + AuthorizationPolicy). */
export const SUBJECT_HEADER = "x-auth-subject";
export const ADMIN_HEADER = "x-auth-admin";
export const REQUEST_ID_HEADER = "x-request-id";

/** What a handler knows about the call it serves, free of any transport type. */
export interface CallContext {
  /** Aborted when the client cancels, the deadline passes, or (for streams) the server shuts down. */
  readonly signal: AbortSignal;
  /** Absolute deadline in epoch milliseconds, if the caller set one. */
  readonly deadline: number | undefined;
  readonly requestId: string;
  /** The verified subject forwarded by the gateway, if any. */
  readonly subject: string | undefined;
  readonly admin: boolean;
  readonly log: Logger;
  /** Metadata to pass on to calls this handler makes (request id, trace context, subject). */
  readonly propagate: Record<string, string>;
}
