import { AppError } from "@coinmesh/lib/errors";
import { serve } from "@coinmesh/lib/grpc-server";
import { silentLogger } from "@coinmesh/lib/log";
import { startTestServer, type TestServer } from "@coinmesh/lib/testing";
import { CurrencyType, RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "vitest";
import { createCurrencyCatalog } from "../src/currencies.ts";
import { createUsersDirectory } from "../src/users-directory.ts";

const call = {};

async function failure(promise: Promise<unknown>): Promise<AppError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof AppError) return err;
    throw err;
  }
  throw new Error("expected a failure");
}

describe("users directory", () => {
  function directory(maxEntries = 10) {
    const existing = new Set(["a", "b", "c"]);
    const client = {
      calls: 0,
      down: false,
      async getUser({ id }: { id?: string }) {
        client.calls++;
        await new Promise((resolve) => setTimeout(resolve, 5));
        if (client.down)
          throw new AppError("unavailable", "UserService.GetUser: connection refused");
        if (!existing.has(id ?? "")) throw new AppError("not_found", `user ${id} not found`);
        return {} as never;
      },
    };
    return { client, users: createUsersDirectory({ client, timeoutMs: 100, maxEntries }) };
  }

  test("remembers users that exist, shares concurrent lookups, asks again about unknown ones", async () => {
    const { client, users } = directory();
    await Promise.all([users.requireUser("a", "user_id", call), users.requireUser("a", "x", call)]);
    await users.requireUser("a", "user_id", call);
    expect(client.calls).toBe(1);
    const missing = await failure(users.requireUser("zz", "to_user_id", call));
    expect(missing.kind).toBe("not_found");
    expect(missing.details.metadata).toEqual({ user_id: "zz", field: "to_user_id" });
    await failure(users.requireUser("zz", "user_id", call));
    expect(client.calls).toBe(3);
  });

  test("a known user needs no user service; an unknown one gets UNAVAILABLE while it is down", async () => {
    const { client, users } = directory();
    await users.requireUser("a", "user_id", call);
    client.down = true;
    await users.requireUser("a", "user_id", call);
    const down = await failure(users.requireUser("b", "user_id", call));
    expect(down.kind).toBe("unavailable");
    expect(down.details.reason).toBe("USER_SERVICE_UNAVAILABLE");
  });

  test("forgets the oldest user beyond maxEntries", async () => {
    const { client, users } = directory(2);
    for (const id of ["a", "b", "c"]) await users.requireUser(id, "user_id", call);
    await users.requireUser("c", "user_id", call);
    expect(client.calls).toBe(3);
    await users.requireUser("a", "user_id", call);
    expect(client.calls).toBe(4);
  });
});

describe("currency catalog", () => {
  function catalog() {
    let now = 0;
    const client = {
      calls: 0,
      failure: undefined as AppError | undefined,
      codes: ["BTC", "USD"],
      async listCurrencies() {
        client.calls++;
        if (client.failure) throw client.failure;
        return { currencies: client.codes.map((code) => ({ code })) } as never;
      },
    };
    const currencies = createCurrencyCatalog({
      client,
      timeoutMs: 100,
      ttlMs: 1_000,
      clock: () => now,
      log: silentLogger(),
    });
    return { client, currencies, advance: (ms: number) => (now += ms) };
  }
  const usd = [{ field: "currency", code: "USD" }];

  test("names every unknown code in one INVALID_ARGUMENT", async () => {
    const { currencies } = catalog();
    const error = await failure(
      currencies.requireKnown(
        [
          { field: "asset", code: "DOGE" },
          { field: "quote_currency", code: "USD" },
          { field: "x", code: "ZZZ" },
        ],
        call,
      ),
    );
    expect(error.kind).toBe("invalid_argument");
    expect(error.details.fieldViolations).toEqual([
      { field: "asset", description: "unknown currency DOGE" },
      { field: "x", description: "unknown currency ZZZ" },
    ]);
  });

  test("fetches once per TTL, refreshing in the background after it", async () => {
    const { client, currencies, advance } = catalog();
    await Promise.all([currencies.requireKnown(usd, call), currencies.requireKnown(usd, call)]);
    advance(999);
    await currencies.requireKnown(usd, call);
    expect(client.calls).toBe(1);
    advance(1);
    client.codes.push("EUR");
    // The expired list answers at once; the refresh lands for the next request.
    await failure(currencies.requireKnown([{ field: "currency", code: "EUR" }], call));
    await new Promise((resolve) => setTimeout(resolve, 0));
    await currencies.requireKnown([{ field: "currency", code: "EUR" }], call);
    expect(client.calls).toBe(2);
  });

  test("UNAVAILABLE only until a first list arrives; a failed refresh keeps the old list", async () => {
    const { client, currencies, advance } = catalog();
    client.failure = new AppError("deadline_exceeded", "RateService.ListCurrencies: too slow");
    const cold = await failure(currencies.requireKnown(usd, call));
    expect(cold.kind).toBe("unavailable");
    expect(cold.details.reason).toBe("RATE_SERVICE_UNAVAILABLE");
    client.failure = undefined;
    await currencies.requireKnown(usd, call);
    client.failure = new AppError("unavailable", "down");
    advance(5_000);
    await currencies.requireKnown(usd, call);
    await new Promise((resolve) => setTimeout(resolve, 0));
    await currencies.requireKnown(usd, call);
    expect(client.calls).toBe(4);
  });
});

describe("shared lookups over gRPC: deadlines", () => {
  // A user service and a rate service whose answers take `delayMs`, called through lib's client.
  const slow = { delayMs: 0, calls: 0 };
  const answerLater = async () => {
    slow.calls++;
    await new Promise((resolve) => setTimeout(resolve, slow.delayMs));
  };
  const unused = async (): Promise<never> => {
    throw new AppError("internal", "not part of this test");
  };
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer([
      serve(UserService, {
        async getUser(req) {
          await answerLater();
          return { user: { id: req.id } };
        },
        createUser: unused,
        listUsers: unused,
        updateUser: unused,
      }),
      serve(RateService, {
        async listCurrencies() {
          await answerLater();
          return { currencies: [{ code: "USD", name: "USD", unit: "$", type: CurrencyType.FIAT }] };
        },
        getRate: unused,
        getRates: unused,
        async *watchRates() {},
      }),
    ]);
  });
  afterAll(() => server?.stop());
  beforeEach(() => {
    slow.calls = 0;
  });

  const users = (timeoutMs: number) =>
    createUsersDirectory({ client: server.grpcClient(UserService), timeoutMs, maxEntries: 10 });
  const currencies = (timeoutMs: number) =>
    createCurrencyCatalog({
      client: server.grpcClient(RateService),
      timeoutMs,
      ttlMs: 60_000,
      clock: Date.now,
      log: silentLogger(),
    });
  const usd = [{ field: "currency", code: "USD" }];
  const lookups = {
    "a user": (timeoutMs: number) => {
      const directory = users(timeoutMs);
      return (call: object) => directory.requireUser("u", "user_id", call);
    },
    "the currency list": (timeoutMs: number) => {
      const catalog = currencies(timeoutMs);
      return (call: object) => catalog.requireKnown(usd, call);
    },
  };

  test.each(Object.entries(lookups))(
    "a caller's short deadline fails that caller only, not another waiting for %s",
    async (_, lookupOf) => {
      slow.delayMs = 300;
      const lookup = lookupOf(2_000);
      const now = Date.now();
      const hurried = failure(lookup({ deadline: now + 50 }));
      const patient = lookup({ deadline: now + 5_000 });
      const early = await hurried;
      expect(early.kind).toBe("unavailable");
      expect(early.details.metadata).toEqual({ cause: "deadline_exceeded" });
      await patient;
      expect(slow.calls).toBe(1);
    },
  );

  test.each(Object.entries(lookups))(
    "a caller that cancels stops waiting for %s; another still gets it",
    async (_, lookupOf) => {
      slow.delayMs = 300;
      const lookup = lookupOf(2_000);
      const controller = new AbortController();
      const leaving = failure(lookup({ signal: controller.signal }));
      // A deadline beyond setTimeout's range (about 24.8 days) must not fire at once.
      const staying = lookup({ deadline: Date.now() + 30 * 86_400_000 });
      controller.abort(new AppError("cancelled", "call cancelled"));
      expect((await leaving).kind).toBe("cancelled");
      await staying;
      expect(slow.calls).toBe(1);
    },
  );

  test.each(Object.entries(lookups))(
    "the upstream cap ends a lookup of %s before a longer caller deadline: UNAVAILABLE",
    async (_, lookupOf) => {
      slow.delayMs = 1_000;
      const error = await failure(lookupOf(100)({ deadline: Date.now() + 5_000 }));
      expect(error.kind).toBe("unavailable");
      expect(error.details.metadata).toEqual({ cause: "deadline_exceeded" });
    },
  );
});
