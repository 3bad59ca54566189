import { createViolations } from "@coinmesh/lib/errors";
import { decodePageToken, encodePageToken, pageSize } from "@coinmesh/lib/paging";
import { checkUuid } from "./request-fields.ts";

/** A validated request for one page of a user's listing, newest first. */
export interface PageRequest {
  userId: string;
  limit: number;
  /** The id the page starts below; undefined for the first page. */
  before: string | undefined;
}

/** Validates user_id, page_size and page_token together; the token is bound to listing and user. */
export function readPageRequest(
  req: { userId: string; pageSize: number; pageToken: string },
  listing: string,
): PageRequest {
  const violations = createViolations();
  const userId = checkUuid(req.userId, "user_id", violations);
  const limit = pageSize(req.pageSize, violations);
  const position = decodePageToken(req.pageToken, `${listing}:${userId}`, violations);
  // Tokens are checksummed, not signed: a hand-made one must still hold a UUID.
  const before = position && checkUuid(position[0] ?? "", "page_token", violations);
  violations.throwIfAny();
  return { userId, limit, before };
}

/**
 * One page from limit + 1 rows (the extra row only says whether another page exists) and the
 * token of the next page.
 */
export function toPage<T extends { id: string }>(rows: T[], request: PageRequest, listing: string) {
  const items = rows.slice(0, request.limit);
  const last = items.at(-1);
  const nextPageToken =
    rows.length > request.limit && last
      ? encodePageToken(`${listing}:${request.userId}`, [last.id])
      : "";
  return { items, nextPageToken };
}
