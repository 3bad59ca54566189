import { execFileSync } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync } from "node:fs";
import http2 from "node:http2";
import https from "node:https";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { CreateUserRequestSchema } from "@coinmesh/proto/user/v1/user_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startProbe } from "./probe.ts";

let probe: Awaited<ReturnType<typeof startProbe>>;
const ORIGIN = "https://app.example.com";

beforeAll(async () => {
  probe = await startProbe({
    CORS_ORIGINS: `${ORIGIN},http://localhost:5173`,
    MAX_CONCURRENT_STREAMS: "7",
    HEADERS_TIMEOUT_MS: "300",
    IDLE_TIMEOUT_MS: "1000",
  });
});

afterAll(async () => {
  await probe?.stop();
});

/** Resolves with how long the server took to close a connection that sent `bytes`. */
async function closedAfter(bytes: string): Promise<number> {
  const socket = net.connect(probe.gateway.port, "127.0.0.1");
  socket.on("error", () => {});
  await once(socket, "connect");
  const start = Date.now();
  if (bytes) socket.write(bytes);
  socket.resume();
  await once(socket, "close");
  return Date.now() - start;
}

describe("CORS", () => {
  const CREATE_USER = "/coinmesh.user.v1.UserService/CreateUser";
  const preflight = (origin: string) =>
    fetch(`${probe.gateway.url}${CREATE_USER}`, {
      method: "OPTIONS",
      headers: {
        origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type,connect-protocol-version,authorization",
      },
    });

  it("answers a preflight from a configured origin", async () => {
    const res = await preflight(ORIGIN);
    expect(res.status).toBe(204);
    expect(res.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    expect(res.headers.get("access-control-allow-methods")).toContain("POST");
    const allowed = res.headers.get("access-control-allow-headers")?.toLowerCase() ?? "";
    for (const h of ["content-type", "connect-protocol-version", "authorization", "x-grpc-web"]) {
      expect(allowed).toContain(h);
    }
  });

  it("exposes the Connect and gRPC-web headers to a configured origin", async () => {
    const res = await fetch(`${probe.gateway.url}${CREATE_USER}`, {
      method: "POST",
      headers: { origin: ORIGIN, "content-type": "application/json" },
      body: JSON.stringify({ email: "c@example.com", displayName: "C" }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    const exposed = res.headers.get("access-control-expose-headers")?.toLowerCase() ?? "";
    for (const h of ["grpc-status", "grpc-message", "grpc-status-details-bin"]) {
      expect(exposed).toContain(h);
    }
  });

  it("grants nothing to other origins", async () => {
    const res = await preflight("https://evil.example.com");
    expect(res.headers.get("access-control-allow-origin")).toBeNull();
  });

  it("tells caches that a cacheable GET's answer depends on the Origin, whoever asks", async () => {
    const get = (headers: Record<string, string>) =>
      fetch(
        `${probe.gateway.url}/coinmesh.rate.v1.RateService/ListCurrencies?encoding=json&message=%7B%7D`,
        { headers },
      );
    const askers: Record<string, string>[] = [
      {},
      { origin: "https://evil.example.com" },
      { origin: ORIGIN },
    ];
    for (const headers of askers) {
      const res = await get(headers);
      await res.arrayBuffer();
      expect(res.headers.get("vary")).toBe("Origin");
    }
  });
});

const createUser = (() => {
  const message = toBinary(
    CreateUserRequestSchema,
    create(CreateUserRequestSchema, { email: "t@example.com", displayName: "T" }),
  );
  const body = Buffer.alloc(5 + message.length);
  body.writeUInt32BE(message.length, 1);
  body.set(message, 5);
  return body;
})();

describe("connection limits", () => {
  it("advertises MAX_CONCURRENT_STREAMS to HTTP/2 clients", async () => {
    const session = http2.connect(probe.gateway.url);
    try {
      const [settings] = await once(session, "remoteSettings");
      expect(settings.maxConcurrentStreams).toBe(7);
    } finally {
      session.close();
    }
  });

  it("refuses streams past MAX_CONCURRENT_STREAMS and serves the others", async () => {
    // Requests sent before the gateway's SETTINGS arrive (node's client holds back streams past
    // the limit once it knows it): 9 open at once against a limit of 7. A client that goes past
    // the limit after acknowledging it loses the whole connection (GOAWAY PROTOCOL_ERROR).
    const session = http2.connect(probe.gateway.url);
    session.on("error", () => {});
    try {
      const streams = Array.from({ length: 9 }, () => {
        const req = session.request({
          ":method": "POST",
          ":path": "/coinmesh.user.v1.UserService/CreateUser",
          "content-type": "application/grpc",
          te: "trailers",
        });
        req.on("error", () => {});
        return req;
      });
      const outcomes = await Promise.all(
        streams.map(async (req) => {
          let status: unknown;
          req.on("response", (h) => {
            status = h["grpc-status"];
          });
          req.on("trailers", (t) => {
            status = t["grpc-status"];
          });
          req.resume();
          // Bodies follow once all nine are open.
          setTimeout(() => {
            if (!req.closed) req.end(createUser);
          }, 100);
          // once() would reject on the refused stream's "error".
          await new Promise((resolve) => req.once("close", resolve));
          return req.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM
            ? "refused"
            : `grpc-status ${status}`;
        }),
      );
      expect(outcomes.filter((o) => o === "refused")).toHaveLength(2);
      expect(outcomes.filter((o) => o === "grpc-status 0")).toHaveLength(7);
    } finally {
      session.close();
    }
  });

  it("drops a connection that sends nothing within HEADERS_TIMEOUT_MS", async () => {
    expect(await closedAfter("")).toBeLessThan(3_000);
  });

  it("drops an HTTP/1.1 request whose headers never finish", async () => {
    expect(await closedAfter("POST / HTTP/1.1\r\nHost: x\r\n")).toBeLessThan(3_000);
  });

  it("closes an idle HTTP/2 connection after IDLE_TIMEOUT_MS", async () => {
    const session = http2.connect(probe.gateway.url);
    session.on("error", () => {});
    const start = Date.now();
    await once(session, "close");
    expect(Date.now() - start).toBeGreaterThanOrEqual(900);
    expect(Date.now() - start).toBeLessThan(4_000);
  });

  it("closes an idle HTTP/1.1 keep-alive connection after IDLE_TIMEOUT_MS", async () => {
    const took = await closedAfter(
      "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
    );
    expect(took).toBeGreaterThanOrEqual(900);
    expect(took).toBeLessThan(4_000);
  });
});

describe("TLS from cert files", () => {
  let tlsProbe: Awaited<ReturnType<typeof startProbe>>;
  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), "gateway-tls-"));
    const [certFile, keyFile] = [join(dir, "cert.pem"), join(dir, "key.pem")];
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        keyFile,
        "-out",
        certFile,
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
      ],
      { stdio: "ignore" },
    );
    tlsProbe = await startProbe({ TLS_CERT_FILE: certFile, TLS_KEY_FILE: keyFile });
  });
  afterAll(async () => {
    await tlsProbe?.stop();
  });

  it("serves gRPC over h2 (ALPN)", async () => {
    const session = http2.connect(`https://127.0.0.1:${tlsProbe.gateway.port}`, {
      rejectUnauthorized: false,
    });
    try {
      const req = session.request({
        ":method": "POST",
        ":path": "/coinmesh.user.v1.UserService/CreateUser",
        "content-type": "application/grpc",
        te: "trailers",
      });
      req.end(createUser);
      req.resume();
      const [trailers] = await once(req, "trailers");
      expect(trailers["grpc-status"]).toBe("0");
    } finally {
      session.close();
    }
  });

  it("serves Connect over HTTP/1.1", async () => {
    const body = await new Promise<string>((resolve, reject) => {
      const req = https.request(
        `https://127.0.0.1:${tlsProbe.gateway.port}/coinmesh.user.v1.UserService/CreateUser`,
        {
          method: "POST",
          rejectUnauthorized: false,
          headers: { "content-type": "application/json" },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () =>
            resolve(`${res.statusCode} ${res.httpVersion} ${Buffer.concat(chunks)}`),
          );
        },
      );
      req.on("error", reject);
      req.end(JSON.stringify({ email: "h1@example.com", displayName: "H" }));
    });
    expect(body).toMatch(/^200 1\.1 .*"id":"h1@example.com"/);
  });
});
