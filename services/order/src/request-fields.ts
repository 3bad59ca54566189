import type { createViolations } from "@coinmesh/lib/errors";

type Violations = ReturnType<typeof createViolations>;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// The shape of a code only; whether the rate service knows it is checked by currencies.ts.
const CURRENCY = /^[A-Za-z0-9]{2,12}$/;
const MAX_KEY = 128;
// Control characters (NUL above all) cannot be stored in Postgres text or shown in a log line.
const CONTROL = /\p{Cc}/u;

/** A UUID, lower-cased so that one user has one spelling. */
export function checkUuid(raw: string, field: string, violations: Violations): string {
  if (raw === "") violations.add(field, "is required");
  else if (!UUID.test(raw)) violations.add(field, "must be a UUID");
  return raw.toLowerCase();
}

/** A currency code, upper-cased: the rate service treats codes case-insensitively. */
export function checkCurrencyCode(raw: string, field: string, violations: Violations): string {
  if (raw === "") violations.add(field, "is required");
  else if (!CURRENCY.test(raw)) violations.add(field, "must be a currency code such as USD");
  return raw.toUpperCase();
}

/** 1 to 128 characters chosen by the client, without control characters. */
export function checkIdempotencyKey(raw: string, violations: Violations): string {
  const field = "idempotency_key";
  const length = [...raw].length;
  if (length === 0) violations.add(field, "is required");
  else if (length > MAX_KEY) violations.add(field, `must be at most ${MAX_KEY} characters`);
  else if (CONTROL.test(raw)) violations.add(field, "must not contain control characters");
  return raw;
}
