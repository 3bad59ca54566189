import { serve } from "@coinmesh/lib/grpc-server";
import { startTestServer, type TestServer } from "@coinmesh/lib/testing";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { AppError, type ErrorKind } from "../src/errors.ts";
import { createServiceClient } from "../src/grpc-client.ts";

// UserService stands in for any service: GetUser is a read (NO_SIDE_EFFECTS in the proto),
// CreateUser a write. Each handler counts its attempts and fails with the kinds it is handed.
const attempts = { getUser: 0, createUser: 0 };
/** The failures of the next attempts, in order; an attempt past the end succeeds. */
let failures: ErrorKind[] = [];
const nextOutcome = () => {
  const kind = failures.shift();
  if (kind) throw new AppError(kind, `attempt failed with ${kind}`);
};
let server: TestServer;
let client: ReturnType<typeof createServiceClient<typeof UserService>>;

beforeAll(async () => {
  const unused = async (): Promise<never> => {
    throw new AppError("internal", "not part of this test");
  };
  server = await startTestServer([
    serve(UserService, {
      async getUser(req) {
        attempts.getUser++;
        nextOutcome();
        return { user: { id: req.id } };
      },
      async createUser() {
        attempts.createUser++;
        nextOutcome();
        return { user: { id: "new" } };
      },
      listUsers: unused,
      updateUser: unused,
    }),
  ]);
  client = createServiceClient(UserService, server.address, { defaultTimeoutMs: 5_000 });
});
afterAll(async () => {
  client?.close();
  await server?.stop();
});
beforeEach(() => {
  attempts.getUser = 0;
  attempts.createUser = 0;
  failures = [];
});

async function kindOf(call: Promise<unknown>): Promise<string> {
  try {
    await call;
  } catch (err) {
    if (err instanceof AppError) return err.kind;
    throw err;
  }
  throw new Error("expected the call to fail");
}

describe("the service client's retries", () => {
  it("tries a read 3 times on UNAVAILABLE, then reports UNAVAILABLE", async () => {
    failures = ["unavailable", "unavailable", "unavailable", "unavailable"];
    expect(await kindOf(client.client.getUser({ id: "u" }))).toBe("unavailable");
    expect(attempts.getUser).toBe(3);
  });

  it("a read that succeeds on a later attempt answers the caller", async () => {
    failures = ["unavailable", "unavailable"];
    const { user } = await client.client.getUser({ id: "u" });
    expect(user?.id).toBe("u");
    expect(attempts.getUser).toBe(3);
  });

  it.each<ErrorKind>(["internal", "deadline_exceeded", "resource_exhausted", "not_found"])(
    "tries a read once on %s",
    async (kind) => {
      failures = [kind, kind, kind];
      expect(await kindOf(client.client.getUser({ id: "u" }))).toBe(kind);
      expect(attempts.getUser).toBe(1);
    },
  );

  it("tries a write once, even on UNAVAILABLE", async () => {
    failures = ["unavailable", "unavailable", "unavailable"];
    expect(await kindOf(client.client.createUser({ email: "a@example.com" }))).toBe("unavailable");
    expect(attempts.createUser).toBe(1);
  });
});
