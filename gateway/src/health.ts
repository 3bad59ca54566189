import { setTimeout as sleep } from "node:timers/promises";
import { create, type DescService, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Forwarder } from "@coinmesh/lib/grpc-forward";
import {
  Health,
  HealthCheckRequestSchema,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as Status,
} from "@coinmesh/proto/grpc/health/v1/health_pb";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";

const PROBE_TIMEOUT_MS = 1_000;
// Probes answer from a result at most this old, so a burst of checks costs one round trip.
const PROBE_CACHE_MS = 1_000;
const WATCH_INTERVAL_MS = 1_000;
const CHECK_ALL = toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema));

/**
 * The gateway's own health: alive while the process runs, SERVING until shutdown starts, and
 * each public service SERVING while its backend answers grpc.health.v1 with SERVING.
 */
export function createHealth(backends: ReadonlyMap<DescService, Forwarder>) {
  let shuttingDown = false;
  const byName = new Map([...backends].map(([service, f]) => [service.typeName, f]));
  const probes = new Map<Forwarder, { at: number; result: Promise<boolean> }>();

  async function ask(backend: Forwarder): Promise<boolean> {
    try {
      const bytes = await backend.unary(Health.method.check, CHECK_ALL, {
        deadline: Date.now() + PROBE_TIMEOUT_MS,
        metadata: {},
        signal: AbortSignal.timeout(PROBE_TIMEOUT_MS * 2),
      });
      return fromBinary(HealthCheckResponseSchema, bytes).status === Status.SERVING;
    } catch {
      return false;
    }
  }

  function serving(backend: Forwarder): Promise<boolean> {
    const cached = probes.get(backend);
    if (cached && Date.now() - cached.at < PROBE_CACHE_MS) return cached.result;
    const result = ask(backend);
    probes.set(backend, { at: Date.now(), result });
    return result;
  }

  async function statusOf(service: string): Promise<Status> {
    if (shuttingDown) return Status.NOT_SERVING;
    if (service === "") return Status.SERVING;
    const backend = byName.get(service);
    if (!backend) throw new ConnectError(`unknown service ${service}`, Code.NotFound);
    return (await serving(backend)) ? Status.SERVING : Status.NOT_SERVING;
  }

  const handlers: ServiceImpl<typeof Health> = {
    check: async (req) => ({ status: await statusOf(req.service) }),
    async *watch(req, ctx) {
      let last: Status | undefined;
      while (!ctx.signal.aborted) {
        const status = await statusOf(req.service).catch(() => Status.SERVICE_UNKNOWN);
        if (status !== last) yield { status };
        last = status;
        await sleep(WATCH_INTERVAL_MS, undefined, { signal: ctx.signal }).catch(() => {});
      }
    },
  };

  return {
    handlers,
    /** Ready when not shutting down and every backend answers SERVING. */
    async ready(): Promise<boolean> {
      if (shuttingDown) return false;
      const results = await Promise.all([...new Set(backends.values())].map(serving));
      return results.every(Boolean);
    },
    startShutdown() {
      shuttingDown = true;
    },
  };
}

export type GatewayHealth = ReturnType<typeof createHealth>;
