import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { StatusSchema } from "@coinmesh/proto/google/rpc/status_pb";
import { Metadata, type ServiceError, status } from "@grpc/grpc-js";
import {
  AppError,
  type ErrorDetails,
  type ErrorKind,
  packDetails,
  unpackDetails,
} from "./errors.ts";

/** The single mapping of error kinds to gRPC codes; `satisfies` makes the compiler check it is complete. */
export const statusOfKind = {
  invalid_argument: status.INVALID_ARGUMENT,
  not_found: status.NOT_FOUND,
  already_exists: status.ALREADY_EXISTS,
  failed_precondition: status.FAILED_PRECONDITION,
  permission_denied: status.PERMISSION_DENIED,
  unauthenticated: status.UNAUTHENTICATED,
  resource_exhausted: status.RESOURCE_EXHAUSTED,
  unavailable: status.UNAVAILABLE,
  deadline_exceeded: status.DEADLINE_EXCEEDED,
  cancelled: status.CANCELLED,
  aborted: status.ABORTED,
  internal: status.INTERNAL,
} as const satisfies Record<ErrorKind, status>;

const kindOfStatus = new Map<number, ErrorKind>(
  Object.entries(statusOfKind).map(([kind, code]) => [code, kind as ErrorKind]),
);

/** The canonical upper-case name of a code, e.g. "NOT_FOUND". */
export function codeName(code: number): string {
  return status[code] ?? "UNKNOWN";
}

/** The error kind a status code from another service means; unmapped codes are internal. */
export function kindOfCode(code: number): ErrorKind {
  return kindOfStatus.get(code) ?? "internal";
}

export const STATUS_DETAILS_KEY = "grpc-status-details-bin";

/**
 * Turns anything thrown by a handler into a grpc-js status. AppErrors keep their message and
 * details; anything else becomes INTERNAL with a generic message (the caller logs the cause).
 */
export function toServiceError(err: unknown): Partial<ServiceError> & { code: status } {
  if (!(err instanceof AppError)) {
    return { code: status.INTERNAL, details: "internal error" };
  }
  const code = statusOfKind[err.kind];
  const metadata = new Metadata();
  const details = packDetails(err.details);
  if (details.length > 0) {
    const body = create(StatusSchema, { code, message: err.message, details });
    metadata.set(STATUS_DETAILS_KEY, Buffer.from(toBinary(StatusSchema, body)));
  }
  return { code, details: err.message, metadata };
}

/**
 * The google.rpc details of a status received from another service (its
 * grpc-status-details-bin trailer); empty when there are none or they do not parse.
 */
export function detailsOfStatus(metadata: Metadata | undefined): ErrorDetails {
  const raw = metadata?.get(STATUS_DETAILS_KEY)[0];
  if (!raw || typeof raw === "string") return {};
  try {
    return unpackDetails(fromBinary(StatusSchema, raw).details);
  } catch {
    return {};
  }
}
