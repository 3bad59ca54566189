// The framework ceiling: a grpc-js server with one unary method that returns the request bytes
// untouched (identity serializers, no protobuf, no handler logic), built with the same server
// options as lib/src/grpc-server.ts. Whatever a service loses against it is ours to explain.
import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";

export const ECHO_PATH = "/coinmesh.bench.v1.Echo/Echo";

const identity = (bytes: Buffer) => bytes;

const definition = {
  Echo: {
    path: ECHO_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
} as grpc.ServiceDefinition;

export interface EchoServer {
  port: number;
  stop(): Promise<void>;
}

export async function startEchoServer(host: string, port: number): Promise<EchoServer> {
  const server = new grpc.Server({
    "grpc.max_receive_message_length": 4 * 1024 * 1024,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.http2.min_ping_interval_without_data_ms": 10_000,
  });
  new HealthImplementation({ "": "SERVING" }).addToServer(server);
  server.addService(definition, {
    Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) =>
      callback(null, call.request),
  });
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return {
    port: bound,
    stop: () =>
      new Promise((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 1_000);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
}

if (import.meta.main) {
  const server = await startEchoServer(
    process.env.HOST ?? "127.0.0.1",
    Number(process.env.PORT ?? 50099),
  );
  console.log(JSON.stringify({ msg: "echo SERVING", port: server.port }));
  const stop = () => void server.stop().then(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}
