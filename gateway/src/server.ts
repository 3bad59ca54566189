import http, { type IncomingMessage, type ServerResponse } from "node:http";
import http2, {
  type Http2ServerRequest,
  type Http2ServerResponse,
  type Http2Session,
  type IncomingHttpHeaders,
  type ServerHttp2Stream,
} from "node:http2";
import net from "node:net";
import tls from "node:tls";
import type { Logger } from "@coinmesh/lib/log";
import { createCors } from "./cors.ts";

type Request = IncomingMessage | Http2ServerRequest;
type Response = ServerResponse | Http2ServerResponse;

export interface HttpServerOptions {
  host: string;
  port: number;
  /** PEM certificate and key; without them the port speaks cleartext (HTTP/1.1 and h2c). */
  tls: { cert: Buffer; key: Buffer } | undefined;
  /** connect-node's handler for everything the fast path does not take. */
  connect: (req: Request, res: Response) => void;
  /** Takes gRPC unary streams it serves itself; false leaves them to `connect`. */
  fastPath: {
    serve(
      stream: ServerHttp2Stream,
      headers: IncomingHttpHeaders,
      peer: string | undefined,
    ): boolean;
  };
  ready: () => Promise<boolean>;
  corsOrigins: string[];
  maxConcurrentStreams: number;
  headersTimeoutMs: number;
  /**
   * Longest a request body may take to arrive over HTTP/1.1, and over HTTP/2 for calls left to
   * connect-node (the fast path bounds its own by each call's deadline).
   */
  requestTimeoutMs: number;
  idleTimeoutMs: number;
  log: Logger;
}

export interface RunningHttpServer {
  port: number;
  /** Stops accepting, lets open calls finish for up to graceMs, then drops what is left. */
  close(graceMs: number): Promise<void>;
}

// Every HTTP/2 connection starts with this preface; no HTTP/1.1 request line does.
const PREFACE = Buffer.from("PRI * HTTP/2.0");
const isPreface = (chunk: Buffer) => {
  const n = Math.min(chunk.length, PREFACE.length);
  return n >= 3 && chunk.subarray(0, n).equals(PREFACE.subarray(0, n));
};

function text(res: Response, status: number, body: string) {
  (res as ServerResponse).writeHead(status, {
    "content-type": "text/plain; charset=utf-8",
    "cache-control": "no-store",
  });
  res.end(body);
}

/**
 * One port for Connect, gRPC-web and gRPC over HTTP/1.1 and HTTP/2. Cleartext connections are
 * told apart by their first bytes (the HTTP/2 preface) and handed to an http or http2 server;
 * with TLS, ALPN decides. Plain probes: `/healthz` (alive) and `/readyz` (backends serving).
 */
export async function startHttpServer(options: HttpServerOptions): Promise<RunningHttpServer> {
  const { log } = options;
  const applyCors = createCors(options.corsOrigins);

  function onRequest(req: Request, res: Response) {
    const path = req.url?.split("?", 1)[0];
    if (path === "/healthz") return text(res, 200, "ok\n");
    if (path === "/readyz") {
      options.ready().then(
        (ready) => text(res, ready ? 200 : 503, ready ? "ready\n" : "not ready\n"),
        () => text(res, 503, "not ready\n"),
      );
      return;
    }
    if (applyCors(req, res)) return;
    options.connect(req, res);
  }

  const h1 = http.createServer(
    {
      headersTimeout: options.headersTimeoutMs,
      requestTimeout: options.requestTimeoutMs,
      keepAliveTimeout: options.idleTimeoutMs,
      // How often those two are checked (30 s by default, too coarse for short limits).
      connectionsCheckingInterval: Math.min(1_000, options.headersTimeoutMs),
    },
    (req, res) => {
      // connect-node reads a body through the request's async iterator and stops early when it
      // refuses a message (too large). By default that destroys the request, Node then stops
      // reading the socket, and the next request on the connection waits behind the unread
      // bytes until requestTimeout. Stopped without destroying, the rest is drained once the
      // response is out (requestTimeout still bounds a body that never ends).
      req[Symbol.asyncIterator] = () => req.iterator({ destroyOnReturn: false });
      res.once("finish", () => {
        if (!req.complete) req.resume();
      });
      onRequest(req, res);
    },
  );
  // http.Server enforces headersTimeout and requestTimeout from a timer it starts when it
  // listens; this one never listens itself (it is handed sockets), so start that timer here.
  h1.emit("listening");

  const h2 = http2.createServer({
    settings: { maxConcurrentStreams: options.maxConcurrentStreams },
  });
  const sessions = new Set<Http2Session>();
  // The client's address, read once per connection rather than on every stream.
  const peers = new WeakMap<Http2Session, string | undefined>();
  h2.on("session", (session) => {
    sessions.add(session);
    peers.set(session, session.socket.remoteAddress);
    session.once("close", () => sessions.delete(session));
    // An idle session is closed gracefully: open streams finish, new ones go elsewhere.
    session.setTimeout(options.idleTimeoutMs, () => session.close());
  });
  h2.on("stream", (stream, headers, _flags, rawHeaders) => {
    if (options.fastPath.serve(stream, headers, peers.get(stream.session as Http2Session))) return;
    // connect-node reads a body with no clock of its own, so a client that stalls or trickles
    // it would hold the stream for good. Past requestTimeoutMs the stream is reset (the client
    // sees CANCELED), as HTTP/1.1 drops such a request.
    const timer = setTimeout(
      () => stream.close(http2.constants.NGHTTP2_CANCEL),
      options.requestTimeoutMs,
    );
    const bodyIn = () => clearTimeout(timer);
    stream.once("end", bodyIn);
    stream.once("close", bodyIn);
    // What http2's compatibility layer does for a "request" listener, for the streams left over.
    onRequest(
      new http2.Http2ServerRequest(stream, headers, undefined as never, rawHeaders),
      new http2.Http2ServerResponse(stream),
    );
  });

  const sockets = new Set<net.Socket>();
  const track = (socket: net.Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    // Until http or http2 takes the socket (and after), a reset peer is no reason to crash.
    socket.on("error", () => {});
  };
  const listener = options.tls
    ? tls.createServer(
        { ...options.tls, ALPNProtocols: ["h2", "http/1.1"] },
        (socket: tls.TLSSocket) => {
          track(socket);
          (socket.alpnProtocol === "h2" ? h2 : h1).emit("connection", socket);
        },
      )
    : net.createServer({ noDelay: true }, (socket) => {
        track(socket);
        socket.setTimeout(options.headersTimeoutMs, () => socket.destroy());
        socket.once("data", (chunk: Buffer) => {
          socket.setTimeout(0);
          socket.pause();
          socket.unshift(chunk);
          if (isPreface(chunk)) {
            h2.emit("connection", socket);
          } else {
            h1.emit("connection", socket);
            // http reads through the stream the peeked bytes went back into; http2 takes them itself.
            socket.resume();
          }
        });
      });
  listener.on("error", (err) => log.error({ err }, "listener error"));

  await new Promise<void>((resolve, reject) => {
    listener.once("error", reject);
    listener.listen(options.port, options.host, () => {
      listener.off("error", reject);
      resolve();
    });
  });
  const address = listener.address();

  return {
    port: typeof address === "object" && address ? address.port : options.port,
    async close(graceMs) {
      listener.close();
      for (const session of sessions) session.close();
      h1.closeIdleConnections();
      const deadline = Date.now() + graceMs;
      while (sockets.size > 0 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        h1.closeIdleConnections();
      }
      for (const socket of sockets) socket.destroy();
      h1.close();
    },
  };
}
