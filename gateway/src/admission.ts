import type { DescMethod } from "@bufbuild/protobuf";
import type { CallObserver } from "@coinmesh/lib/grpc-service";
import { Code, ConnectError } from "@connectrpc/connect";
import { AuthError, type Authenticator, type AuthFailureReason, type Identity } from "./auth.ts";
import { type Access, needsIdentity } from "./authorization.ts";
import type { HeaderReader } from "./forward.ts";
import type { RateLimiter } from "./rate-limit.ts";

export interface AdmissionDeps {
  authenticator: Authenticator;
  /** Undefined when rate limiting is off. */
  limiter: RateLimiter | undefined;
  /** Proxies in front that append to X-Forwarded-For (0: trust only the socket). */
  trustedProxyHops: number;
  observer: CallObserver;
  authFailed: (reason: AuthFailureReason) => void;
  rateLimited: (anonymous: boolean) => void;
}

/** The address a rate limit applies to when the caller is anonymous. */
export function clientAddress(
  forwardedFor: string | null,
  peer: string | undefined,
  trustedHops: number,
): string {
  if (trustedHops > 0 && forwardedFor) {
    const hops = forwardedFor.split(",");
    // Each trusted proxy appended one entry; the one before them is the client's.
    const entry = hops[Math.max(0, hops.length - trustedHops)];
    if (entry?.trim()) return entry.trim();
  }
  return peer ?? "unknown";
}

/**
 * What happens once headers are in and before the body is read: the token (if any) is
 * verified, RPCs that need one are refused without it, and the caller's rate limit is taken.
 * Refusals are counted like every other call (grpc_server_*), plus their own counters.
 */
export function createAdmission(deps: AdmissionDeps) {
  const { authenticator, limiter, observer } = deps;

  async function check(access: Access, header: HeaderReader, peer: string | undefined) {
    let identity: Identity | undefined;
    try {
      identity = await authenticator.authenticate(header.get("authorization"));
    } catch (err) {
      if (!(err instanceof AuthError)) throw err;
      deps.authFailed(err.reason);
      throw new ConnectError(err.message, Code.Unauthenticated);
    }
    if (identity === undefined && needsIdentity(access)) {
      deps.authFailed("missing");
      throw new ConnectError("this RPC needs an Authorization: Bearer token", Code.Unauthenticated);
    }
    if (limiter) {
      const key = identity
        ? `sub:${identity.subject}`
        : `ip:${clientAddress(header.get("x-forwarded-for"), peer, deps.trustedProxyHops)}`;
      if (!(await limiter.take(key))) {
        deps.rateLimited(identity === undefined);
        throw new ConnectError("rate limit exceeded; slow down", Code.ResourceExhausted);
      }
    }
    return identity;
  }

  return {
    /** Resolves with the caller's identity (undefined: anonymous) or throws a ConnectError. */
    async admit(
      method: DescMethod,
      access: Access,
      header: HeaderReader,
      peer: string | undefined,
    ): Promise<Identity | undefined> {
      try {
        return await check(access, header, peer);
      } catch (err) {
        const code = ConnectError.from(err).code;
        observer.started(method);
        observer.handled(method, code as number, 0);
        throw err;
      }
    },
  };
}

export type Admission = ReturnType<typeof createAdmission>;
