import { type DescFile, type DescService, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Health } from "@coinmesh/proto/grpc/health/v1/health_pb";
import * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";
import { bindService, type CallObserver, type ServiceHandlers } from "./grpc-service.ts";
import type { Logger } from "./log.ts";

/** A service and its handlers, ready to be served. */
export interface ServiceRegistration {
  service: DescService;
  handlers: ServiceHandlers<DescService>;
}

/** Pairs a service with its handlers, checking them against each other. */
export function serve<S extends DescService>(
  service: S,
  handlers: ServiceHandlers<S>,
): ServiceRegistration {
  return { service, handlers: handlers as unknown as ServiceHandlers<DescService> };
}

export interface GrpcServerOptions {
  host: string;
  port: number;
  services: ServiceRegistration[];
  log: Logger;
  observer?: CallObserver;
  /** Limits for a server that must not be pushed over by one client. */
  maxReceiveMessageBytes?: number;
}

export interface RunningGrpcServer {
  readonly port: number;
  /** Marks every service SERVING (after migrations and warm-up). */
  setServing(): void;
  /**
   * Flips health to NOT_SERVING, refuses new calls, ends open streams with UNAVAILABLE and lets
   * in-flight unary calls finish; after graceMs whatever is left is cancelled.
   */
  shutdown(graceMs: number): Promise<void>;
}

/** Every file a service needs to describe itself over reflection, dependencies first. */
function descriptorFiles(services: DescService[]): Buffer[] {
  const seen = new Set<string>();
  const out: Buffer[] = [];
  const visit = (file: DescFile) => {
    if (seen.has(file.name)) return;
    seen.add(file.name);
    for (const dep of file.dependencies) visit(dep);
    out.push(Buffer.from(toBinary(FileDescriptorProtoSchema, file.proto)));
  };
  for (const service of services) visit(service.file);
  return out;
}

export async function startGrpcServer(options: GrpcServerOptions): Promise<RunningGrpcServer> {
  const { log } = options;
  const server = new grpc.Server({
    "grpc.max_receive_message_length": options.maxReceiveMessageBytes ?? 4 * 1024 * 1024,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.http2.min_ping_interval_without_data_ms": 10_000,
  });
  const shutdownController = new AbortController();
  const names = options.services.map((s) => s.service.typeName);
  const health = new HealthImplementation(
    Object.fromEntries(["", ...names].map((name) => [name, "NOT_SERVING" as const])),
  );
  // Health Watch streams would hold tryShutdown open for the whole grace period: track them, so
  // that shutdown can end them once they have seen NOT_SERVING.
  const healthWatches = new Set<grpc.ServerWritableStream<unknown, unknown>>();
  health.addToServer({
    addService(definition, implementation) {
      const watch = implementation.watch as grpc.handleServerStreamingCall<unknown, unknown>;
      server.addService(definition, {
        ...implementation,
        watch(call: grpc.ServerWritableStream<unknown, unknown>) {
          healthWatches.add(call);
          call.once("close", () => healthWatches.delete(call));
          call.once("cancelled", () => healthWatches.delete(call));
          watch(call);
        },
      });
    },
  });
  // @grpc/reflection reads only `fileDescriptorProtos` from a proto-loader package definition.
  const files = descriptorFiles([Health, ...options.services.map((s) => s.service)]);
  type PackageDefinition = ConstructorParameters<typeof ReflectionService>[0];
  new ReflectionService(
    { coinmesh: { fileDescriptorProtos: files } } as unknown as PackageDefinition,
    {
      services: [Health.typeName, ...names],
    },
  ).addToServer(server);
  for (const { service, handlers } of options.services) {
    const bound = bindService(service, handlers, {
      log,
      observer: options.observer,
      shutdownSignal: shutdownController.signal,
    });
    server.addService(bound.definition, bound.implementation);
  }
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(
      `${options.host.includes(":") ? `[${options.host}]` : options.host}:${options.port}`,
      grpc.ServerCredentials.createInsecure(),
      (err, boundPort) => (err ? reject(err) : resolve(boundPort)),
    );
  });

  const setAll = (status: "SERVING" | "NOT_SERVING") => {
    for (const name of ["", ...names]) health.setStatus(name, status);
  };

  return {
    port,
    setServing: () => setAll("SERVING"),
    async shutdown(graceMs) {
      setAll("NOT_SERVING");
      shutdownController.abort();
      for (const call of healthWatches) {
        call.emit("error", { code: grpc.status.UNAVAILABLE, details: "server is shutting down" });
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          log.warn({ graceMs }, "grace period over, cancelling remaining calls");
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    },
  };
}
