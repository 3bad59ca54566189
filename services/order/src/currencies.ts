import { createViolations } from "@coinmesh/lib/errors";
import type { ServiceClient } from "@coinmesh/lib/grpc-client";
import type { Logger } from "@coinmesh/lib/log";
import type { RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { awaitShared, type Call, dependencyFailure, sharedCallOptions } from "./upstream.ts";

export interface CurrencyCatalog {
  /** INVALID_ARGUMENT naming every code the rate service does not list. */
  requireKnown(codes: { field: string; code: string }[], call: Call): Promise<void>;
}

export interface CurrencyCatalogDeps {
  client: Pick<ServiceClient<typeof RateService>, "listCurrencies">;
  timeoutMs: number;
  /** How long a fetched list is used before it is fetched again. */
  ttlMs: number;
  clock: () => number;
  log: Logger;
}

/**
 * The currencies the rate service lists, fetched once per ttlMs. Only the first fetch makes a
 * request wait (and fail with UNAVAILABLE if the rate service is down); after that an expired
 * list keeps serving while one refresh runs in the background, and a failed refresh keeps the
 * list it had. Requests that wait for the first fetch share it, each within its own deadline.
 * Currencies are added rarely and never removed in practice.
 */
export function createCurrencyCatalog(deps: CurrencyCatalogDeps): CurrencyCatalog {
  let codes: Set<string> | undefined;
  let fetchedAt = 0;
  let refreshing: Promise<Set<string>> | undefined;

  function refresh(call: Call): Promise<Set<string>> {
    refreshing ??= deps.client
      .listCurrencies({}, sharedCallOptions(call, deps.timeoutMs))
      .then(
        (response) => {
          codes = new Set(response.currencies.map((c) => c.code.toUpperCase()));
          fetchedAt = deps.clock();
          return codes;
        },
        (err: unknown) => {
          throw dependencyFailure(err, "the currency list", "RATE_SERVICE_UNAVAILABLE");
        },
      )
      .finally(() => {
        refreshing = undefined;
      });
    return refreshing;
  }

  async function current(call: Call): Promise<Set<string>> {
    if (!codes) {
      return awaitShared(refresh(call), call, "the currency list", "RATE_SERVICE_UNAVAILABLE");
    }
    if (deps.clock() - fetchedAt >= deps.ttlMs && !refreshing) {
      refresh(call).catch((err: unknown) =>
        deps.log.warn({ err }, "currency list refresh failed; keeping the previous list"),
      );
    }
    return codes;
  }

  return {
    async requireKnown(wanted, call) {
      const known = await current(call);
      const violations = createViolations();
      for (const { field, code } of wanted) {
        if (!known.has(code)) violations.add(field, `unknown currency ${code}`);
      }
      violations.throwIfAny("unknown currency");
    },
  };
}
