import { SignJWT } from "jose";

/** The HS256 development secret `npm start` gives the gateway (scripts/start.ts). */
export const DEV_JWT_SECRET = "coinmesh-local-development-secret-do-not-deploy";

export interface TokenSettings {
  secret: string;
  issuer?: string;
  audience?: string;
}

/** An HS256 token for one user, as the gateway's development configuration verifies it. */
export function mintToken(
  settings: TokenSettings,
  subject: string,
  ttlSeconds = 3_600,
): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: "HS256" })
    .setSubject(subject)
    .setIssuer(settings.issuer ?? "coinmesh-dev")
    .setAudience(settings.audience ?? "coinmesh")
    .setIssuedAt()
    .setExpirationTime(`${ttlSeconds}s`)
    .sign(new TextEncoder().encode(settings.secret));
}
