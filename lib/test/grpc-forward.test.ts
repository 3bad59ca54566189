import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { serve } from "@coinmesh/lib/grpc-server";
import { startTestServer, type TestServer } from "@coinmesh/lib/testing";
import { BadRequestSchema } from "@coinmesh/proto/google/rpc/error_details_pb";
import {
  GetUserRequestSchema,
  GetUserResponseSchema,
  UserService,
} from "@coinmesh/proto/user/v1/user_pb";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CallContext } from "../src/call-context.ts";
import { AppError, createViolations } from "../src/errors.ts";
import { createForwarder, type ForwardOptions } from "../src/grpc-forward.ts";

// UserService.GetUser stands in for any backend RPC: the id picks what the handler does.
const getUser = UserService.method.getUser;
const unused = async (): Promise<never> => {
  throw new AppError("internal", "not part of this test");
};
let seen: CallContext | undefined;
let cancelled = 0;

function backend(port = 0) {
  return startTestServer(
    [
      serve(UserService, {
        async getUser(req, ctx) {
          seen = ctx;
          if (req.id === "slow") {
            await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
            cancelled++;
            throw new AppError("cancelled", "gave up");
          }
          if (req.id === "invalid") {
            const violations = createViolations();
            violations.add("id", "is not a ✓ UUID");
            violations.add("other", "is missing");
            violations.throwIfAny();
          }
          return { user: { id: req.id } };
        },
        createUser: unused,
        listUsers: unused,
        updateUser: unused,
      }),
    ],
    port,
  );
}

let server: TestServer;
beforeAll(async () => {
  server = await backend();
});
afterAll(() => server?.stop());

const request = (id: string) =>
  toBinary(GetUserRequestSchema, create(GetUserRequestSchema, { id }));
const options = (extra: Partial<ForwardOptions> = {}): ForwardOptions => ({
  deadline: Date.now() + 5_000,
  metadata: {},
  signal: new AbortController().signal,
  ...extra,
});

async function failure(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof ConnectError) return err;
    throw err;
  }
  throw new Error("expected a failure");
}

describe("the forwarder's unary calls", () => {
  it("sends the bytes, metadata and deadline it is given and returns the backend's bytes", async () => {
    const forwarder = createForwarder(server.address, { methods: [getUser] });
    const deadline = Date.now() + 3_000;
    const bytes = await forwarder.unary(
      getUser,
      request("u-1"),
      options({ deadline, metadata: { "x-request-id": "req-7", "x-canary": "always" } }),
    );
    expect(fromBinary(GetUserResponseSchema, bytes).user?.id).toBe("u-1");
    expect(seen?.requestId).toBe("req-7");
    expect(seen?.propagate["x-canary"]).toBe("always");
    expect(seen?.deadline).toBeGreaterThan(deadline - 1_000);
    // grpc-timeout is relative: the backend adds it to the time the call arrived.
    expect(seen?.deadline).toBeLessThanOrEqual(deadline + 100);
    forwarder.close();
  });

  it("keeps the backend's code, message and details", async () => {
    const forwarder = createForwarder(server.address, { methods: [getUser] });
    const err = await failure(forwarder.unary(getUser, request("invalid"), options()));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toContain("is not a ✓ UUID");
    const [detail] = err.details as { type: string; value: Uint8Array }[];
    expect(detail?.type).toBe("google.rpc.BadRequest");
    const violations = fromBinary(BadRequestSchema, detail?.value ?? new Uint8Array());
    expect(violations.fieldViolations.map((v) => v.field)).toEqual(["id", "other"]);
    forwarder.close();
  });

  it("ends a call at its deadline with DEADLINE_EXCEEDED and cancels it at the backend", async () => {
    const forwarder = createForwarder(server.address, { methods: [getUser] });
    const before = cancelled;
    const started = Date.now();
    const err = await failure(
      forwarder.unary(getUser, request("slow"), options({ deadline: Date.now() + 200 })),
    );
    expect(err.code).toBe(Code.DeadlineExceeded);
    expect(Date.now() - started).toBeLessThan(1_000);
    await expect.poll(() => cancelled).toBe(before + 1);
    forwarder.close();
  });

  it("ends a call whose signal aborts with the signal's reason, and cancels it at the backend", async () => {
    const forwarder = createForwarder(server.address, { methods: [getUser] });
    const before = cancelled;
    const controller = new AbortController();
    const call = forwarder.unary(getUser, request("slow"), options({ signal: controller.signal }));
    setTimeout(() => controller.abort(new ConnectError("shutting down", Code.Unavailable)), 100);
    const err = await failure(call);
    expect(err.code).toBe(Code.Unavailable);
    expect(err.rawMessage).toBe("shutting down");
    await expect.poll(() => cancelled).toBe(before + 1);
    forwarder.close();
  });

  it("answers UNAVAILABLE while the backend is down and reconnects when it is back", async () => {
    const restartable = await backend();
    const port = Number(restartable.address.split(":")[1]);
    const forwarder = createForwarder(restartable.address, { methods: [getUser] });
    expect(
      fromBinary(GetUserResponseSchema, await forwarder.unary(getUser, request("a"), options()))
        .user?.id,
    ).toBe("a");
    await restartable.stop();
    const err = await failure(forwarder.unary(getUser, request("b"), options()));
    expect(err.code).toBe(Code.Unavailable);
    expect(err.rawMessage).toContain(restartable.address);
    const again = await backend(port);
    try {
      const bytes = await forwarder.unary(getUser, request("c"), options());
      expect(fromBinary(GetUserResponseSchema, bytes).user?.id).toBe("c");
    } finally {
      forwarder.close();
      await again.stop();
    }
  });

  it("refuses an expired deadline without calling the backend", async () => {
    const forwarder = createForwarder(server.address, { methods: [getUser] });
    seen = undefined;
    const err = await failure(
      forwarder.unary(getUser, request("late"), options({ deadline: Date.now() - 1 })),
    );
    expect(err.code).toBe(Code.DeadlineExceeded);
    expect(seen).toBeUndefined();
    forwarder.close();
  });
});
