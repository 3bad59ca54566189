import { createRemoteJWKSet, errors, type JWTPayload, type JWTVerifyGetKey, jwtVerify } from "jose";
import type { JwtConfig } from "./config.ts";

/** Who a verified token speaks for. */
export interface Identity {
  /** The user id (a UUID) from `sub`. */
  subject: string;
  /** `admin: true` in the token: may read every user's resources and list users. */
  admin: boolean;
}

export const AUTH_FAILURE_REASONS = [
  "missing",
  "malformed",
  "expired",
  "bad_signature",
  "wrong_issuer",
  "wrong_audience",
  "invalid_claims",
  "keys_unavailable",
] as const;
export type AuthFailureReason = (typeof AUTH_FAILURE_REASONS)[number];

/** A request whose credentials do not verify; `reason` labels the failure metric. */
export class AuthError extends Error {
  readonly reason: AuthFailureReason;
  constructor(reason: AuthFailureReason, message: string) {
    super(message);
    this.name = "AuthError";
    this.reason = reason;
  }
}

/** What `sub` must look like: a user id. */
export const USER_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const BEARER = /^Bearer +([\w-]+\.[\w-]+\.[\w-]+)$/i;
// Verified tokens are remembered so the signature is checked once per token, not per call.
const CACHE_MAX_ENTRIES = 10_000;
// A cached token is re-verified at least this often, so a key removed from the JWKS stops
// working within minutes even for long-lived tokens.
const CACHE_MAX_AGE_MS = 5 * 60_000;

function reasonOf(err: unknown): AuthFailureReason {
  if (err instanceof AuthError) return err.reason;
  if (err instanceof errors.JWTExpired) return "expired";
  if (err instanceof errors.JWSSignatureVerificationFailed) return "bad_signature";
  if (err instanceof errors.JWKSNoMatchingKey) return "bad_signature";
  if (err instanceof errors.JOSEAlgNotAllowed) return "bad_signature";
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === "aud") return "wrong_audience";
    if (err.claim === "iss") return "wrong_issuer";
    return "invalid_claims";
  }
  if (err instanceof errors.JWKSTimeout || err instanceof errors.JWKSInvalid) {
    return "keys_unavailable";
  }
  return "malformed";
}

const MESSAGES: Record<AuthFailureReason, string> = {
  missing: "this RPC needs an Authorization: Bearer token",
  malformed: "the bearer token is malformed",
  expired: "the bearer token has expired",
  bad_signature: "the bearer token's signature does not verify",
  wrong_issuer: "the bearer token has the wrong issuer",
  wrong_audience: "the bearer token has the wrong audience",
  invalid_claims: "the bearer token's claims are invalid",
  keys_unavailable: "the token signing keys are unavailable; try again",
};

function identityOf(payload: JWTPayload): Identity {
  if (typeof payload.sub !== "string" || !USER_ID.test(payload.sub)) {
    throw new AuthError("invalid_claims", "sub must be a user id (UUID)");
  }
  if (payload.admin !== undefined && typeof payload.admin !== "boolean") {
    throw new AuthError("invalid_claims", "admin must be a boolean");
  }
  return { subject: payload.sub.toLowerCase(), admin: payload.admin === true };
}

/**
 * Verifies `Authorization` header values: HS256 with a shared secret (development) or the
 * asymmetric keys of a JWKS URL (production); issuer, audience and expiry are required and
 * checked with a small clock skew. Returns undefined when no header is given.
 */
export function createAuthenticator(config: JwtConfig, now: () => number = Date.now) {
  const key: Uint8Array | JWTVerifyGetKey = config.secret
    ? new TextEncoder().encode(config.secret)
    : createRemoteJWKSet(new URL(config.jwksUrl ?? ""), { timeoutDuration: 2_000 });
  const algorithms = config.secret ? ["HS256"] : ["RS256", "PS256", "ES256", "EdDSA"];
  const cache = new Map<string, { identity: Identity; until: number }>();

  async function verify(token: string): Promise<Identity> {
    const { payload } = await jwtVerify(token, key as JWTVerifyGetKey, {
      issuer: config.issuer,
      audience: config.audience,
      algorithms,
      clockTolerance: config.clockSkewSeconds,
      requiredClaims: ["exp", "sub", "iss", "aud"],
      currentDate: new Date(now()),
    });
    const identity = identityOf(payload);
    const expires = ((payload.exp ?? 0) + config.clockSkewSeconds) * 1000;
    if (cache.size >= CACHE_MAX_ENTRIES) cache.delete(cache.keys().next().value as string);
    cache.set(token, { identity, until: Math.min(expires, now() + CACHE_MAX_AGE_MS) });
    return identity;
  }

  return {
    /** Throws AuthError for a header that is present but does not verify. */
    async authenticate(authorization: string | null | undefined): Promise<Identity | undefined> {
      if (authorization === null || authorization === undefined || authorization === "") {
        return undefined;
      }
      const token = BEARER.exec(authorization)?.[1];
      if (token === undefined) throw new AuthError("malformed", MESSAGES.malformed);
      const cached = cache.get(token);
      if (cached !== undefined) {
        if (now() < cached.until) return cached.identity;
        cache.delete(token);
      }
      try {
        return await verify(token);
      } catch (err) {
        const reason = reasonOf(err);
        throw new AuthError(reason, MESSAGES[reason]);
      }
    },
  };
}

export type Authenticator = ReturnType<typeof createAuthenticator>;
