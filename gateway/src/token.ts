// `npm run token -- --sub <user id> [--admin] [--ttl 1h]`: prints a development token the
// local gateway accepts (HS256 with JWT_SECRET; issuer and audience as the gateway reads them).
import { parseArgs } from "node:util";
import { SignJWT } from "jose";
import { USER_ID } from "./auth.ts";
import { DEFAULT_JWT_AUDIENCE, DEFAULT_JWT_ISSUER } from "./config.ts";

/** The secret `npm start` gives the local gateway (scripts/start.ts); never for a deployment. */
export const DEV_JWT_SECRET = "coinmesh-local-development-secret-do-not-deploy";

export interface TokenClaims {
  sub: string;
  admin?: boolean;
  /** Lifetime as jose understands it: seconds, or "30m", "1h", "7d"; negative for an expired token. */
  ttl?: string | number;
  secret?: string;
  issuer?: string;
  audience?: string;
  /** Epoch seconds the token is issued at; now by default. */
  issuedAt?: number;
}

/** Signs an HS256 token with the claims the gateway checks: sub, admin, iss, aud, iat, exp. */
export function mintToken(claims: TokenClaims): Promise<string> {
  const issuedAt = claims.issuedAt ?? Math.floor(Date.now() / 1000);
  const ttl = claims.ttl ?? "1h";
  const jwt = new SignJWT(claims.admin ? { admin: true } : {})
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(claims.sub)
    .setIssuer(claims.issuer ?? DEFAULT_JWT_ISSUER)
    .setAudience(claims.audience ?? DEFAULT_JWT_AUDIENCE)
    .setIssuedAt(issuedAt)
    .setExpirationTime(typeof ttl === "number" ? issuedAt + ttl : ttl);
  return jwt.sign(new TextEncoder().encode(claims.secret ?? DEV_JWT_SECRET));
}

const TTL = /^\d+(s|m|h|d)?$/;

async function cli() {
  const { values } = parseArgs({
    options: {
      sub: { type: "string" },
      admin: { type: "boolean", default: false },
      ttl: { type: "string", default: "1h" },
    },
  });
  if (!values.sub || !USER_ID.test(values.sub) || !TTL.test(values.ttl)) {
    console.error("usage: npm run token -- --sub <user id (UUID)> [--admin] [--ttl 1h|30m|3600]");
    process.exit(2);
  }
  const env = process.env;
  const ttl = /^\d+$/.test(values.ttl) ? Number(values.ttl) : values.ttl;
  const token = await mintToken({
    sub: values.sub,
    admin: values.admin,
    ttl,
    secret: env.JWT_SECRET || DEV_JWT_SECRET,
    issuer: env.JWT_ISSUER || DEFAULT_JWT_ISSUER,
    audience: env.JWT_AUDIENCE || DEFAULT_JWT_AUDIENCE,
  });
  console.log(token);
}

if (import.meta.main) await cli();
