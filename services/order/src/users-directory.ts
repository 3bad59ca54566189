import { AppError } from "@coinmesh/lib/errors";
import type { ServiceClient } from "@coinmesh/lib/grpc-client";
import type { UserService } from "@coinmesh/proto/user/v1/user_pb";
import { awaitShared, type Call, dependencyFailure, sharedCallOptions } from "./upstream.ts";

export interface UsersDirectory {
  /** Throws NOT_FOUND for an unknown user, UNAVAILABLE when the user service cannot tell. */
  requireUser(userId: string, field: string, call: Call): Promise<void>;
}

export interface UsersDirectoryDeps {
  client: Pick<ServiceClient<typeof UserService>, "getUser">;
  timeoutMs: number;
  /** How many known users to remember. */
  maxEntries: number;
}

/**
 * Asks the user service whether a user exists. Users are never deleted, so a user seen once is
 * remembered (up to maxEntries, oldest forgotten first) and costs no call again; unknown users are
 * not remembered, since they may be created at any moment. Concurrent lookups of one user share a
 * call, which each caller awaits within its own deadline.
 */
export function createUsersDirectory({
  client,
  timeoutMs,
  maxEntries,
}: UsersDirectoryDeps): UsersDirectory {
  const known = new Set<string>();
  const pending = new Map<string, Promise<boolean>>();

  /** True when the user exists. */
  async function exists(userId: string, call: Call): Promise<boolean> {
    try {
      await client.getUser({ id: userId }, sharedCallOptions(call, timeoutMs));
    } catch (err) {
      if (err instanceof AppError && err.kind === "not_found") return false;
      throw dependencyFailure(err, "the user service", "USER_SERVICE_UNAVAILABLE");
    }
    if (known.size >= maxEntries) {
      const oldest = known.values().next().value;
      if (oldest !== undefined) known.delete(oldest);
    }
    known.add(userId);
    return true;
  }

  return {
    async requireUser(userId, field, call) {
      if (known.has(userId)) return;
      let lookup = pending.get(userId);
      if (!lookup) {
        lookup = exists(userId, call).finally(() => pending.delete(userId));
        pending.set(userId, lookup);
      }
      if (!(await awaitShared(lookup, call, "the user service", "USER_SERVICE_UNAVAILABLE"))) {
        throw new AppError("not_found", `user ${userId} not found`, {
          reason: "USER_NOT_FOUND",
          metadata: { user_id: userId, field },
        });
      }
    },
  };
}
