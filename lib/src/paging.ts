import { createHash } from "node:crypto";
import type { createViolations } from "./errors.ts";

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 500;

/** 0 means the default; negative sizes are a violation; large ones are capped. */
export function pageSize(
  requested: number,
  violations: ReturnType<typeof createViolations>,
): number {
  if (requested < 0) violations.add("page_size", "must not be negative");
  if (requested <= 0) return DEFAULT_PAGE_SIZE;
  return Math.min(requested, MAX_PAGE_SIZE);
}

function checksum(body: string): string {
  return createHash("sha256").update(body).digest("base64url").slice(0, 12);
}

/**
 * An opaque token for keyset paging: the position after which the next page starts, bound to the
 * listing it came from (scope, e.g. the user id) and checksummed, so an edited or foreign token
 * fails instead of silently returning another slice. Not a secret: it only names a position in a
 * listing the caller may read anyway.
 */
export function encodePageToken(scope: string, position: string[]): string {
  const body = Buffer.from(JSON.stringify([scope, ...position])).toString("base64url");
  return `${body}.${checksum(body)}`;
}

/** The position inside a page token, or undefined for an empty token (the first page). */
export function decodePageToken(
  token: string,
  scope: string,
  violations: ReturnType<typeof createViolations>,
): string[] | undefined {
  if (token === "") return undefined;
  const [body, sum, extra] = token.split(".");
  if (body && sum && extra === undefined && checksum(body) === sum) {
    try {
      const parsed: unknown = JSON.parse(Buffer.from(body, "base64url").toString());
      if (
        Array.isArray(parsed) &&
        parsed.length > 1 &&
        parsed.every((p) => typeof p === "string") &&
        parsed[0] === scope
      ) {
        return parsed.slice(1) as string[];
      }
    } catch {
      // falls through to the violation below
    }
  }
  violations.add("page_token", "is not a token returned by this listing");
  return undefined;
}
