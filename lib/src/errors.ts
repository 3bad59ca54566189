import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { type Any, anyPack, anyUnpack } from "@bufbuild/protobuf/wkt";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  PreconditionFailureSchema,
} from "@coinmesh/proto/google/rpc/error_details_pb";

/** What went wrong, in the caller's terms. Each kind maps to one gRPC status code (status.ts). */
export type ErrorKind =
  | "invalid_argument"
  | "not_found"
  | "already_exists"
  | "failed_precondition"
  | "permission_denied"
  | "unauthenticated"
  | "resource_exhausted"
  | "unavailable"
  | "deadline_exceeded"
  | "cancelled"
  | "aborted"
  | "internal";

export interface FieldViolation {
  field: string;
  description: string;
}

export interface ErrorDetails {
  /** Every invalid field of the request (INVALID_ARGUMENT). */
  fieldViolations?: FieldViolation[];
  /** A machine-readable reason with structured metadata. */
  reason?: string;
  metadata?: Record<string, string>;
  /** Failed preconditions (FAILED_PRECONDITION), e.g. a shortfall. */
  preconditions?: { type: string; subject: string; description: string }[];
}

/** The one error type domain code throws; the transport turns it into a status. */
export class AppError extends Error {
  readonly kind: ErrorKind;
  readonly details: ErrorDetails;

  constructor(kind: ErrorKind, message: string, details: ErrorDetails = {}, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "AppError";
    this.kind = kind;
    this.details = details;
  }
}

export const ERROR_DOMAIN = "coinmesh.dev";

/** Collects field violations so a request reports every bad field at once. */
export function createViolations() {
  const violations: FieldViolation[] = [];
  return {
    add(field: string, description: string) {
      violations.push({ field, description });
    },
    get count() {
      return violations.length;
    },
    /** Throws INVALID_ARGUMENT listing every violation, if there are any. */
    throwIfAny(message = "invalid request") {
      if (violations.length === 0) return;
      const summary = violations.map((v) => `${v.field}: ${v.description}`).join("; ");
      throw new AppError("invalid_argument", `${message}: ${summary}`, {
        fieldViolations: violations,
      });
    },
  };
}

/** Packs error details as google.rpc messages in google.protobuf.Any. */
export function packDetails(details: ErrorDetails): Any[] {
  const packed: Any[] = [];
  if (details.fieldViolations?.length) {
    packed.push(
      anyPack(
        BadRequestSchema,
        create(BadRequestSchema, { fieldViolations: details.fieldViolations }),
      ),
    );
  }
  if (details.preconditions?.length) {
    packed.push(
      anyPack(
        PreconditionFailureSchema,
        create(PreconditionFailureSchema, { violations: details.preconditions }),
      ),
    );
  }
  if (details.reason) {
    const info: MessageInitShape<typeof ErrorInfoSchema> = {
      reason: details.reason,
      domain: ERROR_DOMAIN,
      metadata: details.metadata ?? {},
    };
    packed.push(anyPack(ErrorInfoSchema, create(ErrorInfoSchema, info)));
  }
  return packed;
}

/**
 * The details packDetails wrote, read back (from another service's status): BadRequest,
 * PreconditionFailure and ErrorInfo; other detail types are ignored.
 */
export function unpackDetails(packed: readonly Any[]): ErrorDetails {
  const details: ErrorDetails = {};
  for (const any of packed) {
    const badRequest = anyUnpack(any, BadRequestSchema);
    if (badRequest) {
      details.fieldViolations = badRequest.fieldViolations.map(({ field, description }) => ({
        field,
        description,
      }));
      continue;
    }
    const precondition = anyUnpack(any, PreconditionFailureSchema);
    if (precondition) {
      details.preconditions = precondition.violations.map(({ type, subject, description }) => ({
        type,
        subject,
        description,
      }));
      continue;
    }
    const info = anyUnpack(any, ErrorInfoSchema);
    if (info) {
      details.reason = info.reason;
      details.metadata = { ...info.metadata };
    }
  }
  return details;
}
