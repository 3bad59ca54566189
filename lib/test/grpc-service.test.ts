import type { DescMethod } from "@bufbuild/protobuf";
import { serve, startGrpcServer } from "@coinmesh/lib/grpc-server";
import { startTestServer, type TestServer } from "@coinmesh/lib/testing";
import { BadRequestSchema } from "@coinmesh/proto/google/rpc/error_details_pb";
import { RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { status } from "@grpc/grpc-js";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import type { CallContext } from "../src/call-context.ts";
import { AppError, createViolations } from "../src/errors.ts";
import { silentLogger } from "../src/log.ts";

// UserService stands in for any service: GetUser's `id` picks what the handler does.
let seen: CallContext | undefined;
const unused = async (): Promise<never> => {
  throw new AppError("internal", "not part of this test");
};
let server: TestServer;

const handlers = serve(UserService, {
  async getUser(req, ctx) {
    seen = ctx;
    if (req.id === "boom") throw new Error("secret database password in the message");
    if (req.id === "invalid") {
      const violations = createViolations();
      violations.add("service", "is not allowed");
      violations.add("other", "is missing");
      violations.throwIfAny();
    }
    if (req.id === "missing") throw new AppError("not_found", "no such thing");
    return { user: { id: req.id } };
  },
  createUser: unused,
  listUsers: unused,
  updateUser: unused,
});

beforeAll(async () => {
  server = await startTestServer([handlers]);
});

afterAll(() => server?.stop());

async function failure(service: string) {
  try {
    await server.connectClient(UserService).getUser({ id: service });
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected a failure");
}

describe("the grpc-js binding", () => {
  it("passes identity, request id, trace context and the canary pin on to downstream calls", async () => {
    await server.connectClient(UserService).getUser(
      { id: "u" },
      {
        headers: {
          "x-request-id": "req-42",
          "x-auth-subject": "user-1",
          "x-auth-admin": "true",
          "x-canary": "always",
          traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
          "x-unrelated": "stays here",
        },
      },
    );
    expect(seen?.subject).toBe("user-1");
    expect(seen?.admin).toBe(true);
    expect(seen?.requestId).toBe("req-42");
    expect(seen?.propagate).toEqual({
      "x-request-id": "req-42",
      "x-auth-subject": "user-1",
      "x-auth-admin": "true",
      "x-canary": "always",
      traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    });
  });

  it("gives a call without a request id one of its own", async () => {
    await server.grpcClient(UserService).getUser({ id: "u" });
    expect(seen?.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(seen?.propagate["x-request-id"]).toBe(seen?.requestId);
  });

  it("hides unexpected errors behind INTERNAL", async () => {
    const err = await failure("boom");
    expect(err.code).toBe(Code.Internal);
    expect(err.rawMessage).toBe("internal error");
  });

  it("reports every field violation in google.rpc.BadRequest", async () => {
    const err = await failure("invalid");
    expect(err.code).toBe(Code.InvalidArgument);
    const fields = err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
    expect(fields.map((f) => [f.field, f.description])).toEqual([
      ["service", "is not allowed"],
      ["other", "is missing"],
    ]);
  });

  it("maps an AppError kind to its code with its message", async () => {
    const err = await failure("missing");
    expect(err.code).toBe(Code.NotFound);
    expect(err.rawMessage).toBe("no such thing");
  });
});

describe("logging", () => {
  it("logs an unexpected error's cause with the RPC and the request id, and sends none of it", async () => {
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: "info" }, { write: (line: string) => lines.push(JSON.parse(line)) });
    const logged = await startGrpcServer({ host: "127.0.0.1", port: 0, services: [handlers], log });
    try {
      const client = createClient(
        UserService,
        createGrpcTransport({ baseUrl: `http://127.0.0.1:${logged.port}` }),
      );
      const err = await client
        .getUser({ id: "boom" }, { headers: { "x-request-id": "req-7" } })
        .then(
          () => undefined,
          (e: unknown) => ConnectError.from(e),
        );
      expect(err?.code).toBe(Code.Internal);
      expect(err?.rawMessage).toBe("internal error");
      expect(lines).toContainEqual(
        expect.objectContaining({
          level: 50,
          msg: "unexpected error",
          rpc: "coinmesh.user.v1.UserService/GetUser",
          request_id: "req-7",
          err: expect.objectContaining({ message: "secret database password in the message" }),
        }),
      );
    } finally {
      await logged.shutdown(200);
    }
  });
});

describe("deadlines", () => {
  it("end a call DEADLINE_EXCEEDED for its handler and its metrics too, unary and server stream", async () => {
    const handled: string[] = [];
    const reasons: unknown[] = [];
    const aborted = (signal: AbortSignal) =>
      new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve()));
    const waitForAbort = async (_req: unknown, ctx: CallContext): Promise<never> => {
      await aborted(ctx.signal);
      reasons.push(ctx.signal.reason);
      throw ctx.signal.reason;
    };
    const slow = await startGrpcServer({
      host: "127.0.0.1",
      port: 0,
      log: silentLogger(),
      observer: {
        started() {},
        handled: (_method: DescMethod, code: number) => handled.push(status[code] ?? ""),
      },
      services: [
        serve(RateService, {
          listCurrencies: waitForAbort,
          getRate: waitForAbort,
          getRates: waitForAbort,
          async *watchRates(_req, ctx) {
            yield { rates: [] };
            await aborted(ctx.signal);
            reasons.push(ctx.signal.reason);
          },
        }),
      ],
    });
    try {
      const client = createClient(
        RateService,
        createGrpcTransport({ baseUrl: `http://127.0.0.1:${slow.port}` }),
      );
      const unary = await client.getRate({}, { timeoutMs: 200 }).then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      const stream = await (async () => {
        for await (const _ of client.watchRates({}, { timeoutMs: 200 })) {
        }
      })().then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      expect([unary?.code, stream?.code]).toEqual([Code.DeadlineExceeded, Code.DeadlineExceeded]);
      await expect.poll(() => handled).toEqual(["DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED"]);
      expect(reasons.map((r) => (r as AppError).kind)).toEqual([
        "deadline_exceeded",
        "deadline_exceeded",
      ]);
    } finally {
      await slow.shutdown(200);
    }
  });
});
