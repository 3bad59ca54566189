import { randomUUID } from "node:crypto";
import { serve } from "@coinmesh/lib/grpc-server";
import {
  createTestDatabase,
  startTestServer,
  type TestDatabase,
  type TestServer,
} from "@coinmesh/lib/testing";
import { BadRequestSchema, ErrorInfoSchema } from "@coinmesh/proto/google/rpc/error_details_pb";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import { Code, ConnectError } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { userHandlers } from "../src/server.ts";
import { createUsers } from "../src/users.ts";
import { createUsersRepository } from "../src/users-repository.ts";

const migrations = new URL("../migrations", import.meta.url).pathname;

let db: TestDatabase;
let server: TestServer;

beforeAll(async () => {
  db = await createTestDatabase(migrations);
  const users = createUsers({
    repo: createUsersRepository(db.pool),
    clock: () => new Date(),
    newId: uuidv7,
  });
  server = await startTestServer([serve(UserService, userHandlers(users))]);
});

afterAll(async () => {
  await server?.stop();
  await db?.drop();
});

const unique = () => `u-${randomUUID()}@example.com`;

async function rejection(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected the call to fail");
}

function violations(err: ConnectError) {
  return err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));
}

function expectEmailTaken(err: ConnectError, email: string | undefined) {
  expect(err.code).toBe(Code.AlreadyExists);
  const [info] = err.findDetails(ErrorInfoSchema);
  expect(info).toMatchObject({
    reason: "EMAIL_TAKEN",
    domain: "coinmesh.dev",
    metadata: { email },
  });
}

describe("CreateUser", () => {
  it("trims and lower-cases the email, trims the name, assigns a UUIDv7", async () => {
    const client = server.connectClient(UserService);
    const email = unique();
    const { user } = await client.createUser({
      email: `  ${email.toUpperCase()} `,
      displayName: "  Ada ",
    });
    expect(user?.email).toBe(email);
    expect(user?.displayName).toBe("Ada");
    expect(user?.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-/);
    expect(user?.createTime).toEqual(user?.updateTime);
  });

  it("reports every bad field at once", async () => {
    const client = server.connectClient(UserService);
    const err = await rejection(client.createUser({ email: "not-an-email", displayName: "   " }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(violations(err).sort()).toEqual(["display_name", "email"]);
  });

  it("rejects names over 100 characters, counting code points", async () => {
    const client = server.connectClient(UserService);
    const ok = await client.createUser({ email: unique(), displayName: "🙂".repeat(100) });
    expect(ok.user?.displayName).toHaveLength(200);
    const err = await rejection(
      client.createUser({ email: unique(), displayName: "a".repeat(101) }),
    );
    expect(err.code).toBe(Code.InvalidArgument);
    expect(violations(err)).toEqual(["display_name"]);
  });

  it("refuses a duplicate email in any case with ALREADY_EXISTS", async () => {
    const client = server.connectClient(UserService);
    const email = unique();
    await client.createUser({ email, displayName: "First" });
    const err = await rejection(
      client.createUser({ email: email.toUpperCase(), displayName: "Second" }),
    );
    expectEmailTaken(err, email);
  });

  it("accepts an email of 254 characters and rejects one of 255", async () => {
    const client = server.connectClient(UserService);
    const ofLength = (n: number) => {
      const local = randomUUID();
      return `${local}${"a".repeat(n - local.length - "@example.com".length)}@example.com`;
    };
    const longest = ofLength(254);
    const ok = await client.createUser({ email: ` ${longest} `, displayName: "Long" });
    expect(ok.user?.email).toBe(longest);
    const err = await rejection(client.createUser({ email: ofLength(255), displayName: "Long" }));
    expect(err.code).toBe(Code.InvalidArgument);
    const [detail] = err.findDetails(BadRequestSchema);
    expect(detail?.fieldViolations.map((v) => [v.field, v.description])).toEqual([
      ["email", "must be at most 254 characters"],
    ]);
  });
});

describe("GetUser", () => {
  it("returns a created user over grpc-js as well", async () => {
    const { user } = await server
      .connectClient(UserService)
      .createUser({ email: unique(), displayName: "G" });
    const got = await server.grpcClient(UserService).getUser({ id: user?.id ?? "" });
    expect(got.user?.email).toBe(user?.email);
  });

  it("accepts an upper-case id", async () => {
    const client = server.connectClient(UserService);
    const { user } = await client.createUser({ email: unique(), displayName: "G" });
    const got = await client.getUser({ id: user?.id.toUpperCase() ?? "" });
    expect(got.user?.id).toBe(user?.id);
  });

  it("rejects a malformed id with INVALID_ARGUMENT and an unknown one with NOT_FOUND", async () => {
    const client = server.connectClient(UserService);
    const bad = await rejection(client.getUser({ id: "42" }));
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(violations(bad)).toEqual(["id"]);
    const missing = await rejection(client.getUser({ id: uuidv7() }));
    expect(missing.code).toBe(Code.NotFound);
  });

  it("rejects an empty id with INVALID_ARGUMENT", async () => {
    const err = await rejection(server.connectClient(UserService).getUser({ id: "" }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(violations(err)).toEqual(["id"]);
  });
});

describe("ListUsers", () => {
  it("pages in id order with no duplicates or gaps while users are being created", async () => {
    const client = server.connectClient(UserService);
    for (let i = 0; i < 7; i++) await client.createUser({ email: unique(), displayName: `L${i}` });
    const seen: string[] = [];
    let token = "";
    let created = 0;
    do {
      const page = await client.listUsers({ pageSize: 3, pageToken: token });
      expect(page.users.length).toBeLessThanOrEqual(3);
      seen.push(...page.users.map((u) => u.id));
      token = page.nextPageToken;
      // Users created mid-listing get larger ids, so they appear in a later page.
      if (created++ < 2) await client.createUser({ email: unique(), displayName: "during" });
    } while (token);
    const all = await client.listUsers({ pageSize: 500 });
    expect(seen).toEqual([...seen].sort());
    expect(new Set(seen).size).toBe(seen.length);
    expect(seen).toEqual(all.users.map((u) => u.id));
  });

  it("defaults to 50, caps at 500 and rejects negative sizes", async () => {
    const client = server.connectClient(UserService);
    // Other tests share this database: 501 more users make sure there are over 500 in all.
    for (let batch = 0; batch < 501; batch += 50) {
      await Promise.all(
        Array.from({ length: Math.min(50, 501 - batch) }, () =>
          client.createUser({ email: unique(), displayName: "Many" }),
        ),
      );
    }
    const byDefault = await client.listUsers({});
    expect(byDefault.users).toHaveLength(50);
    expect(byDefault.nextPageToken).not.toBe("");
    const capped = await client.listUsers({ pageSize: 100_000 });
    expect(capped.users).toHaveLength(500);
    expect(capped.nextPageToken).not.toBe("");
    expect(capped.users.slice(0, 50).map((u) => u.id)).toEqual(byDefault.users.map((u) => u.id));
    const next = await client.listUsers({ pageToken: byDefault.nextPageToken });
    expect(next.users.map((u) => u.id)).toEqual(capped.users.slice(50, 100).map((u) => u.id));
    const err = await rejection(client.listUsers({ pageSize: -1 }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(violations(err)).toEqual(["page_size"]);
  });

  it("rejects a tampered or foreign page token", async () => {
    const client = server.connectClient(UserService);
    await client.createUser({ email: unique(), displayName: "T1" });
    await client.createUser({ email: unique(), displayName: "T2" });
    const { nextPageToken } = await client.listUsers({ pageSize: 1 });
    expect(nextPageToken).not.toBe("");
    const flipped =
      nextPageToken.slice(0, 5) + (nextPageToken[5] === "A" ? "B" : "A") + nextPageToken.slice(6);
    for (const token of [flipped, "garbage", `${nextPageToken}x`]) {
      const err = await rejection(client.listUsers({ pageSize: 1, pageToken: token }));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(violations(err)).toEqual(["page_token"]);
    }
  });
});

describe("UpdateUser", () => {
  it("changes only the fields in the mask", async () => {
    const client = server.connectClient(UserService);
    const { user } = await client.createUser({ email: unique(), displayName: "Before" });
    const email = unique();
    const updated = await client.updateUser({
      user: { id: user?.id, displayName: "After", email },
      updateMask: { paths: ["display_name"] },
    });
    expect(updated.user?.displayName).toBe("After");
    expect(updated.user?.email).toBe(user?.email);
    const both = await client.updateUser({
      user: { id: user?.id, email: email.toUpperCase(), displayName: "Both" },
      updateMask: { paths: ["email", "display_name"] },
    });
    expect(both.user?.email).toBe(email);
    const again = await client.getUser({ id: user?.id ?? "" });
    expect(again.user?.displayName).toBe("Both");
  });

  it("rejects unknown mask paths and invalid values, changing nothing", async () => {
    const client = server.connectClient(UserService);
    const { user } = await client.createUser({ email: unique(), displayName: "Keep" });
    const err = await rejection(
      client.updateUser({
        user: { id: user?.id, displayName: "" },
        updateMask: { paths: ["display_name", "id"] },
      }),
    );
    expect(err.code).toBe(Code.InvalidArgument);
    expect(violations(err).sort()).toEqual(["update_mask.paths", "user.display_name"]);
    expect((await client.getUser({ id: user?.id ?? "" })).user?.displayName).toBe("Keep");
  });

  it("keeps emails unique and reports unknown users", async () => {
    const client = server.connectClient(UserService);
    const a = await client.createUser({ email: unique(), displayName: "A" });
    const b = await client.createUser({ email: unique(), displayName: "B" });
    const taken = await rejection(
      client.updateUser({
        user: { id: b.user?.id, email: a.user?.email },
        updateMask: { paths: ["email"] },
      }),
    );
    expectEmailTaken(taken, a.user?.email);
    expect((await client.getUser({ id: b.user?.id ?? "" })).user?.email).toBe(b.user?.email);
    const missing = await rejection(
      client.updateUser({
        user: { id: uuidv7(), displayName: "X" },
        updateMask: { paths: ["display_name"] },
      }),
    );
    expect(missing.code).toBe(Code.NotFound);
  });

  it("rejects an empty or malformed user.id", async () => {
    const client = server.connectClient(UserService);
    for (const id of ["", "not-a-uuid"]) {
      const err = await rejection(
        client.updateUser({
          user: { id, displayName: "X" },
          updateMask: { paths: ["display_name"] },
        }),
      );
      expect(err.code).toBe(Code.InvalidArgument);
      expect(violations(err)).toEqual(["user.id"]);
    }
  });

  it("changes nothing with an empty mask, and still reports unknown users", async () => {
    const client = server.connectClient(UserService);
    const { user } = await client.createUser({ email: unique(), displayName: "Same" });
    const unchanged = await client.updateUser({
      user: { id: user?.id, displayName: "Other", email: unique() },
    });
    expect(unchanged.user).toEqual(user);
    expect((await client.getUser({ id: user?.id ?? "" })).user).toEqual(user);
    const missing = await rejection(client.updateUser({ user: { id: uuidv7() } }));
    expect(missing.code).toBe(Code.NotFound);
  });
});
