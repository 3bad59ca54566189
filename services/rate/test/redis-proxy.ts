import { once } from "node:events";
import { type AddressInfo, createConnection, createServer, type Socket } from "node:net";

export type ProxyMode =
  /** Bytes flow both ways. */
  | "forward"
  /** Every connection is destroyed and new ones are refused: Redis "killed". */
  | "cut"
  /** Connections are accepted and kept, but nothing is forwarded: Redis hanging. */
  | "stall";

/**
 * A TCP proxy in front of the shared test Redis that a test can cut or stall without
 * touching the Redis other suites use.
 */
export async function startRedisProxy(target = { host: "127.0.0.1", port: 6379 }) {
  let mode: ProxyMode = "forward";
  const sockets = new Set<Socket>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => socket.destroy());
  };
  const server = createServer((client) => {
    track(client);
    if (mode === "cut") {
      client.destroy();
      return;
    }
    const redis = createConnection(target);
    track(redis);
    client.on("data", (chunk) => {
      if (mode === "forward") redis.write(chunk);
    });
    redis.on("data", (chunk) => {
      if (mode === "forward") client.write(chunk);
    });
    client.on("close", () => redis.destroy());
    redis.on("close", () => client.destroy());
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    url: `redis://127.0.0.1:${port}`,
    setMode(next: ProxyMode) {
      mode = next;
      if (next === "cut") for (const socket of sockets) socket.destroy();
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, "close");
    },
  };
}
