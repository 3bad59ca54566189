import { once } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { GetRateRequestSchema, RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { CreateUserRequestSchema, UserService } from "@coinmesh/proto/user/v1/user_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startProbe } from "./probe.ts";

const MAX = 64 * 1024;
let probe: Awaited<ReturnType<typeof startProbe>>;
let url: string;

beforeAll(async () => {
  probe = await startProbe({ MAX_MESSAGE_BYTES: String(MAX) });
  url = probe.gateway.url;
});

afterAll(async () => {
  await probe?.stop();
});

const CREATE_USER = "/coinmesh.user.v1.UserService/CreateUser";
const valid = Buffer.from(
  toBinary(
    CreateUserRequestSchema,
    create(CreateUserRequestSchema, { email: "a@example.com", displayName: "A" }),
  ),
);
const frame = (message: Buffer, flags = 0, declared = message.length) => {
  const head = Buffer.alloc(5);
  head[0] = flags;
  head.writeUInt32BE(declared, 1);
  return Buffer.concat([head, message]);
};

/** One raw gRPC call over a fresh HTTP/2 connection; the status from trailers or headers. */
async function rawGrpc(body: Buffer | Buffer[], headers: Record<string, string> = {}) {
  const session = http2.connect(url);
  session.on("error", () => {});
  try {
    const req = session.request({
      ":method": "POST",
      ":path": CREATE_USER,
      "content-type": "application/grpc",
      te: "trailers",
      ...headers,
    });
    req.on("error", () => {});
    const result = new Promise<{ status?: string; message?: string }>((resolve) => {
      // A status ends the call for the client, even while the server reads no more of the body.
      const take = (h: http2.IncomingHttpHeaders) => {
        if (h["grpc-status"] === undefined) return;
        resolve({ status: String(h["grpc-status"]), message: String(h["grpc-message"] ?? "") });
        req.close();
      };
      req.on("response", take);
      req.on("trailers", take);
      req.on("close", () => resolve({}));
      req.resume();
    });
    for (const chunk of Array.isArray(body) ? body : [body]) {
      if (req.destroyed) break;
      req.write(chunk);
    }
    if (!req.destroyed) req.end();
    return await result;
  } finally {
    session.close();
  }
}

// The same bodies through the gRPC fast path and through connect-node's gRPC handler (a request
// that declares gzip is left to connect-node; uncompressed messages are still allowed there).
describe.each([
  ["the gRPC fast path", {}],
  ["connect-node's gRPC handler", { "grpc-encoding": "gzip" }],
])("gRPC through %s", (_path, extra: Record<string, string>) => {
  it.each([
    ["a valid call", "0", frame(valid)],
    ["an empty body", "12", Buffer.alloc(0)],
    ["an incomplete envelope", "3", Buffer.from([0, 0, 0])],
    ["a truncated message", "3", frame(valid.subarray(0, 5), 0, valid.length)],
    ["two messages for a unary RPC", "12", Buffer.concat([frame(valid), frame(valid)])],
    ["bytes that are not protobuf", "13", frame(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]))],
  ])("answers %s with status %s", async (_name, status, body) => {
    expect((await rawGrpc(body, extra)).status).toBe(status);
  });

  it("refuses a compressed flag it cannot honour", async () => {
    // No encoding declared: INTERNAL, as connect-node says; gzip declared but not gzip: INVALID_ARGUMENT.
    const want = extra["grpc-encoding"] ? "3" : "13";
    expect((await rawGrpc(frame(valid, 1), extra)).status).toBe(want);
  });

  it("refuses a message over MAX_MESSAGE_BYTES with RESOURCE_EXHAUSTED without reading it all", async () => {
    const big = Buffer.alloc(4 * MAX, 1);
    const chunks = [
      frame(big).subarray(0, 5),
      ...Array.from({ length: 16 }, (_, i) =>
        big.subarray(i * (big.length / 16), (i + 1) * (big.length / 16)),
      ),
    ];
    expect((await rawGrpc(chunks, extra)).status).toBe("8");
  });

  it("refuses a malformed grpc-timeout with INVALID_ARGUMENT", async () => {
    expect((await rawGrpc(frame(valid), { ...extra, "grpc-timeout": "soon" })).status).toBe("3");
  });
});

interface Answer {
  status: number;
  header(name: string): string | null;
  body: Buffer;
}

/** One request over HTTP/1.1 (fetch; connect-node serves it). */
async function h1(
  path: string,
  init: { method?: string; body?: string | Buffer; headers?: Record<string, string> },
): Promise<Answer> {
  const res = await fetch(`${url}${path}`, {
    method: init.method ?? "POST",
    body: init.body,
    headers: init.headers,
  });
  return {
    status: res.status,
    header: (n) => res.headers.get(n),
    body: Buffer.from(await res.arrayBuffer()),
  };
}

/** One request over HTTP/2 (the fast path serves POSTs it knows; connect-node the rest). */
async function h2(
  path: string,
  init: {
    method?: string;
    body?: string | Buffer;
    headers?: Record<string, string>;
    /** Sends the body and then nothing more, leaving the request open. */
    stall?: boolean;
  },
  base = url,
): Promise<Answer> {
  const session = http2.connect(base);
  session.on("error", () => {});
  try {
    const req = session.request({
      ":method": init.method ?? "POST",
      ":path": path,
      ...init.headers,
    });
    req.on("error", () => {});
    const chunks: Buffer[] = [];
    const head = new Promise<http2.IncomingHttpHeaders>((resolve) => req.once("response", resolve));
    let trailers: http2.IncomingHttpHeaders = {};
    req.once("trailers", (t) => {
      trailers = t;
    });
    req.on("data", (c: Buffer) => chunks.push(c));
    const closed = new Promise((resolve) => req.once("close", resolve));
    if (init.stall) req.write(init.body ?? "");
    else req.end(init.body);
    const headers = await head;
    await closed;
    return {
      status: Number(headers[":status"]),
      // Trailers too (a gRPC status), so HTTP/2 answers read like fetch's.
      header: (n) => {
        const value = headers[n] ?? trailers[n];
        return value === undefined ? null : String(value);
      },
      body: Buffer.concat(chunks),
    };
  } finally {
    session.close();
  }
}

/** The grpc-status a gRPC-web answer carries, in its headers or its trailer envelope. */
function grpcWebStatus(res: Answer) {
  const inHeaders = res.header("grpc-status");
  if (inHeaders !== null) return inHeaders;
  for (let at = 0; at + 5 <= res.body.length; at += 5 + res.body.readUInt32BE(at + 1)) {
    if (((res.body[at] as number) & 0x80) === 0) continue;
    const trailer = res.body.subarray(at + 5, at + 5 + res.body.readUInt32BE(at + 1));
    return /grpc-status: ?(\d+)/.exec(trailer.toString())?.[1];
  }
  return undefined;
}

describe.each([
  ["HTTP/1.1", h1],
  ["HTTP/2", h2],
])("Connect over %s", (_version, send) => {
  const post = (body: string | Buffer, headers: Record<string, string>, path = CREATE_USER) =>
    send(path, { body, headers });
  const codeOf = (res: Answer) => (JSON.parse(res.body.toString()) as { code: string }).code;

  it("answers a valid call in JSON and in binary", async () => {
    const json = await post('{"email": "j@example.com", "displayName": "J"}', {
      "content-type": "application/json",
    });
    expect(json.status).toBe(200);
    expect(JSON.parse(json.body.toString())).toMatchObject({ user: { id: "j@example.com" } });
    const binary = await post(valid, { "content-type": "application/proto" });
    expect(binary.status).toBe(200);
    expect(binary.header("content-type")).toBe("application/proto");
  });

  it("answers JSON that does not parse with invalid_argument", async () => {
    const res = await post("{not json", { "content-type": "application/json" });
    expect(res.status).toBe(400);
    expect(codeOf(res)).toBe("invalid_argument");
  });

  it("answers JSON of the wrong shape with invalid_argument", async () => {
    const res = await post('{"email": 5}', { "content-type": "application/json" });
    expect(codeOf(res)).toBe("invalid_argument");
  });

  it("refuses an unknown content type with 415", async () => {
    const res = await post("hello", { "content-type": "text/plain" });
    expect(res.status).toBe(415);
  });

  it("answers protobuf that does not parse with internal", async () => {
    const res = await post(Buffer.from([0xff, 0xff, 0xff]), {
      "content-type": "application/proto",
    });
    expect(codeOf(res)).toBe("internal");
  });

  it("refuses a body over MAX_MESSAGE_BYTES with resource_exhausted", async () => {
    const email = "x".repeat(2 * MAX);
    const res = await post(JSON.stringify({ email }), { "content-type": "application/json" });
    expect(res.status).toBe(429);
    expect(codeOf(res)).toBe("resource_exhausted");
  });

  it("refuses a malformed timeout with invalid_argument", async () => {
    const res = await post("{}", {
      "content-type": "application/json",
      "connect-timeout-ms": "-5",
    });
    expect(codeOf(res)).toBe("invalid_argument");
  });

  it("answers a GET whose message does not parse with invalid_argument", async () => {
    const res = await send("/coinmesh.rate.v1.RateService/GetRate?encoding=json&message=%7B", {
      method: "GET",
    });
    expect(codeOf(res)).toBe("invalid_argument");
  });

  it("answers a GET whose base64 message is not base64 with invalid_argument", async () => {
    const get = (message: string) =>
      send(`/coinmesh.rate.v1.RateService/GetRate?encoding=proto&base64=1&message=${message}`, {
        method: "GET",
      });
    const res = await get("!!");
    expect(res.status).toBe(400);
    expect(codeOf(res)).toBe("invalid_argument");
    const rate = toBinary(GetRateRequestSchema, create(GetRateRequestSchema, { base: "BTC" }));
    expect((await get(Buffer.from(rate).toString("base64url"))).status).toBe(200);
  });

  it("answers an unknown path with 404", async () => {
    const res = await post("{}", { "content-type": "application/json" }, "/no.such.Service/Nope");
    expect(res.status).toBe(404);
  });
});

describe.each([
  ["HTTP/1.1", h1],
  ["HTTP/2", h2],
])("gRPC-web over %s", (_version, send) => {
  async function statusOf(body: Buffer, headers: Record<string, string> = {}) {
    const res = await send(CREATE_USER, {
      body,
      headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", ...headers },
    });
    expect(res.status).toBe(200);
    return grpcWebStatus(res);
  }

  it.each(["soon", "-1m", "123456789S"])(
    "refuses the malformed grpc-timeout %j with INVALID_ARGUMENT",
    async (timeout) => {
      expect(await statusOf(frame(valid), { "grpc-timeout": timeout })).toBe("3");
    },
  );

  it("answers a gRPC-web+JSON body that is not JSON with INVALID_ARGUMENT", async () => {
    expect(await statusOf(frame(valid), { "content-type": "application/grpc-web+json" })).toBe("3");
  });

  // gRPC-web text (base64) is not spoken here, as connect-node does not.
  it.each([
    "application/grpc-web-text",
    "application/grpc-web-text+proto",
    "application/grpc-web+bogus",
  ])("refuses the content type %s with 415", async (contentType) => {
    const res = await send(CREATE_USER, {
      body: frame(valid).toString("base64"),
      headers: { "content-type": contentType, "x-grpc-web": "1" },
    });
    expect(res.status).toBe(415);
  });

  it.each([
    ["a valid call", "0", frame(valid)],
    ["an incomplete envelope", "3", Buffer.from([0, 0, 0])],
    ["a frame that is cut short", "3", frame(valid.subarray(0, 4), 0, valid.length)],
    ["bytes that are not protobuf", "13", frame(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]))],
    ["a compressed flag without an encoding", "13", frame(valid, 1)],
    ["a message over MAX_MESSAGE_BYTES", "8", frame(Buffer.alloc(2 * MAX, 1))],
  ])("answers %s with status %s", async (_name, status, body) => {
    expect(await statusOf(body)).toBe(status);
  });
});

describe("HTTP/1.1 keep-alive after a body the gateway refused to read", () => {
  it("answers the next request at once instead of leaving it behind the unread bytes", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const send = (body: Buffer) =>
      new Promise<Answer>((resolve, reject) => {
        const req = http.request(`${url}${CREATE_USER}`, {
          method: "POST",
          agent,
          headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" },
        });
        req.on("error", reject);
        req.on("response", async (res) => {
          const chunks: Buffer[] = [];
          for await (const chunk of res) chunks.push(chunk as Buffer);
          resolve({
            status: res.statusCode ?? 0,
            header: (n) => (res.headers[n] as string | undefined) ?? null,
            body: Buffer.concat(chunks),
          });
        });
        req.end(body);
      });
    try {
      const refused = await send(frame(Buffer.alloc(8 * MAX, 1)));
      expect(grpcWebStatus(refused)).toBe("8");
      const started = Date.now();
      const next = await send(frame(valid));
      expect([next.status, grpcWebStatus(next)]).toEqual([200, "0"]);
      // Not held behind the unread bytes until the request timeout (30 s here) and answered 408.
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      agent.destroy();
    }
  });
});

describe("gRPC content types", () => {
  const send = (contentType: string) =>
    h2(CREATE_USER, {
      body: frame(valid),
      headers: { "content-type": contentType, te: "trailers" },
    });

  it("answers a gRPC+JSON body that is not JSON with INVALID_ARGUMENT", async () => {
    const res = await send("application/grpc+json");
    expect(res.status).toBe(200);
    expect(res.header("grpc-status")).toBe("3");
  });

  it.each(["application/grpc+bogus", "application/grpcx", "text/plain"])(
    "refuses %s with 415",
    async (contentType) => {
      expect((await send(contentType)).status).toBe(415);
    },
  );
});

describe("a request body that stalls over HTTP/2", () => {
  const DEFAULT_TIMEOUT_MS = 1_000;
  const MAX_TIMEOUT_MS = 1_500;
  let slow: Awaited<ReturnType<typeof startProbe>>;
  beforeAll(async () => {
    slow = await startProbe({
      DEFAULT_TIMEOUT_MS: String(DEFAULT_TIMEOUT_MS),
      MAX_TIMEOUT_MS: String(MAX_TIMEOUT_MS),
      HEADERS_TIMEOUT_MS: "1000",
    });
  });
  afterAll(async () => {
    await slow?.stop();
  });

  const codeOf = (res: Answer) => (JSON.parse(res.body.toString()) as { code: string }).code;
  // Headers and part of a body, then nothing: the call's deadline ends it (DEADLINE_EXCEEDED)
  // instead of the stream staying open for good.
  describe.each([
    [
      "gRPC",
      { "content-type": "application/grpc", te: "trailers" },
      { "grpc-timeout": "300m" },
      (res: Answer) => res.header("grpc-status"),
      "4",
    ],
    [
      "gRPC-web",
      { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" },
      { "grpc-timeout": "300m" },
      grpcWebStatus,
      "4",
    ],
    [
      "Connect",
      { "content-type": "application/proto", "connect-protocol-version": "1" },
      { "connect-timeout-ms": "300" },
      (res: Answer) => `${res.status} ${codeOf(res)}`,
      "504 deadline_exceeded",
    ],
  ])("%s", (_protocol, headers, timeout, statusOf, want) => {
    const stall = async (extra: Record<string, string>) => {
      const start = Date.now();
      const res = await h2(
        CREATE_USER,
        { body: frame(valid).subarray(0, 8), headers: { ...headers, ...extra }, stall: true },
        slow.gateway.url,
      );
      return { status: statusOf(res), took: Date.now() - start };
    };

    it("ends at the client's timeout", async () => {
      const { status, took } = await stall(timeout);
      expect(status).toBe(want);
      expect(took).toBeLessThan(DEFAULT_TIMEOUT_MS);
    });

    it("ends at DEFAULT_TIMEOUT_MS without one", async () => {
      const { status, took } = await stall({});
      expect(status).toBe(want);
      expect(took).toBeGreaterThanOrEqual(DEFAULT_TIMEOUT_MS - 100);
    });
  });

  // Calls the fast path leaves to connect-node (here: gRPC declaring gzip; also streams) are
  // reset with CANCEL once max(HEADERS_TIMEOUT_MS, MAX_TIMEOUT_MS) passes, whatever their timeout.
  it.each([
    ["with a timeout", { "grpc-timeout": "300m" }],
    ["without one", {}],
  ])("resets a call connect-node serves %s", async (_name, timeout: Record<string, string>) => {
    const session = http2.connect(slow.gateway.url);
    session.on("error", () => {});
    try {
      const start = Date.now();
      const req = session.request({
        ":method": "POST",
        ":path": CREATE_USER,
        "content-type": "application/grpc",
        te: "trailers",
        "grpc-encoding": "gzip",
        ...timeout,
      });
      req.on("error", () => {});
      req.resume();
      req.write(frame(valid).subarray(0, 8));
      await once(req, "close");
      expect(req.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
      expect(Date.now() - start).toBeGreaterThanOrEqual(MAX_TIMEOUT_MS - 100);
    } finally {
      session.close();
    }
  });

  it("leaves a stream whose request arrived open past that bound", async () => {
    const rates = slow.gateway.client(RateService, "grpc");
    const stream = rates.watchRates({ base: "BTC", quotes: ["EUR"] })[Symbol.asyncIterator]();
    await stream.next();
    const next = stream.next().then(
      () => "ended",
      (err: unknown) => String(err),
    );
    const later = new Promise((resolve) => setTimeout(() => resolve("open"), MAX_TIMEOUT_MS + 500));
    expect(await Promise.race([next, later])).toBe("open");
    await stream.return?.();
  });

  it("still serves valid calls after all of that", async () => {
    for (const protocol of ["grpc", "grpc-web-h2", "connect-binary-h2"] as const) {
      const users = slow.gateway.client(UserService, protocol);
      const email = `${protocol}@example.com`;
      expect((await users.createUser({ email, displayName: "S" })).user?.id).toBe(email);
    }
  });
});

describe("garbage on the socket", () => {
  async function send(bytes: Buffer) {
    const socket = net.connect(probe.gateway.port, "127.0.0.1");
    socket.on("error", () => {});
    await once(socket, "connect");
    socket.write(bytes);
    const chunks: Buffer[] = [];
    socket.on("data", (c) => chunks.push(c));
    await once(socket, "close");
    return Buffer.concat(chunks).toString("latin1");
  }

  it("closes a connection that speaks no HTTP", async () => {
    expect(await send(Buffer.from("HELLO THERE\r\n\r\n"))).toMatch(/^HTTP\/1.1 400|^$/);
    await send(Buffer.from([0x16, 0x03, 0x01, 0x00, 0xff, 0x01, 0x00]));
  });

  it("closes an HTTP/2 connection whose frames are nonsense", async () => {
    await send(
      Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Buffer.alloc(64, 0xff)]),
    );
  });
});

it("still serves valid calls after all of that", async () => {
  const users = probe.gateway.client(UserService, "grpc");
  const res = await users.createUser({ email: "after@example.com", displayName: "After" });
  expect(res.user?.id).toBe("after@example.com");
  for (const protocol of ["connect-json-h1", "connect-binary-h2", "grpc-web-h2"] as const) {
    const client = probe.gateway.client(UserService, protocol);
    const email = `${protocol}@example.com`;
    expect((await client.createUser({ email, displayName: "B" })).user?.id).toBe(email);
  }
});
