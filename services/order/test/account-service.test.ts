import { toBinary } from "@bufbuild/protobuf";
import {
  AccountService,
  DepositResponseSchema,
  TransactionKind,
} from "@coinmesh/proto/order/v1/account_pb";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { rejection, startStack } from "./services.ts";

let stack: Awaited<ReturnType<typeof startStack>>;
let accounts: ReturnType<typeof stack.order.connectClient<typeof AccountService>>;
let grpcAccounts: ReturnType<typeof stack.order.grpcClient<typeof AccountService>>;
let keys = 0;
const newKey = () => `key-${++keys}`;

beforeAll(async () => {
  stack = await startStack({ maxAmount: "1000000" });
  accounts = stack.order.connectClient(AccountService);
  grpcAccounts = stack.order.grpcClient(AccountService);
});
afterAll(() => stack?.stop());

const balancesOf = (userId: string) => stack.balancesOf(userId);
const funded = (amounts: Record<string, string>) => stack.funded(amounts);

describe("Deposit", () => {
  test("credits the user from the outside world in one balanced transaction", async () => {
    const userId = await stack.createUser();
    const { transaction } = await accounts.deposit({
      userId,
      currency: "usd",
      amount: "0100.50",
      idempotencyKey: newKey(),
    });
    expect(transaction?.kind).toBe(TransactionKind.DEPOSIT);
    expect(transaction?.postings).toEqual([
      expect.objectContaining({ account: "external", currency: "USD", amount: "-100.5" }),
      expect.objectContaining({ account: `user:${userId}`, currency: "USD", amount: "100.5" }),
    ]);
    expect(transaction?.orderId).toBe("");
    expect(await balancesOf(userId)).toEqual({ USD: "100.5" });
  });

  test("a retry with the same key returns the original bytes and credits once", async () => {
    const userId = await stack.createUser();
    const request = { userId, currency: "EUR", amount: "10", idempotencyKey: newKey() };
    const first = await grpcAccounts.deposit(request);
    const retries = await Promise.all([
      grpcAccounts.deposit(request),
      grpcAccounts.deposit({ ...request, amount: "10.000" }), // the same amount, spelled otherwise
      accounts.deposit(request),
    ]);
    for (const retry of retries) {
      expect(toBinary(DepositResponseSchema, retry)).toEqual(
        toBinary(DepositResponseSchema, first),
      );
    }
    expect(await balancesOf(userId)).toEqual({ EUR: "10" });
  });

  test("concurrent attempts with one key execute once and all get the same result", async () => {
    const userId = await stack.createUser();
    const request = { userId, currency: "USD", amount: "7", idempotencyKey: newKey() };
    const results = await Promise.all(
      Array.from({ length: 8 }, () => grpcAccounts.deposit(request)),
    );
    const bytes = results.map((r) =>
      Buffer.from(toBinary(DepositResponseSchema, r)).toString("hex"),
    );
    expect(new Set(bytes).size).toBe(1);
    expect(await balancesOf(userId)).toEqual({ USD: "7" });
  });

  test("keys are scoped per user", async () => {
    const [a, b] = [await stack.createUser(), await stack.createUser()];
    const key = newKey();
    await accounts.deposit({ userId: a, currency: "USD", amount: "1", idempotencyKey: key });
    await accounts.deposit({ userId: b, currency: "USD", amount: "2", idempotencyKey: key });
    expect(await balancesOf(a)).toEqual({ USD: "1" });
    expect(await balancesOf(b)).toEqual({ USD: "2" });
  });

  test("the same key with another payload fails with ALREADY_EXISTS naming the fields", async () => {
    const userId = await stack.createUser();
    const key = newKey();
    await accounts.deposit({ userId, currency: "USD", amount: "5", idempotencyKey: key });
    const error = await rejection(
      accounts.deposit({ userId, currency: "EUR", amount: "6", idempotencyKey: key }),
    );
    expect(error.code).toBe("AlreadyExists");
    expect(error.message).toContain("with different currency and amount");
    expect(error.info?.reason).toBe("IDEMPOTENCY_KEY_REUSED");
    expect(error.info?.metadata).toMatchObject({ rpc: "Deposit", fields: "currency,amount" });
    expect(await balancesOf(userId)).toEqual({ USD: "5" });
  });

  test("the same key for another RPC fails with ALREADY_EXISTS naming the first RPC", async () => {
    const userId = await funded({ USD: "50" });
    const key = newKey();
    await accounts.deposit({ userId, currency: "USD", amount: "5", idempotencyKey: key });
    const error = await rejection(
      accounts.withdraw({ userId, currency: "USD", amount: "5", idempotencyKey: key }),
    );
    expect(error.code).toBe("AlreadyExists");
    expect(error.message).toContain("was already used for Deposit");
    expect(error.info?.reason).toBe("IDEMPOTENCY_KEY_REUSED");
    expect(error.info?.metadata).toEqual({ idempotency_key: key, rpc: "Deposit", fields: "" });
    expect(await balancesOf(userId)).toEqual({ USD: "55" });
  });

  test("reports every invalid field at once", async () => {
    const error = await rejection(
      accounts.deposit({ userId: "nobody", currency: "US$", amount: "-3", idempotencyKey: "" }),
    );
    expect(error.code).toBe("InvalidArgument");
    expect(error.violations).toEqual([
      "user_id: must be a UUID",
      "currency: must be a currency code such as USD",
      'amount: must be a decimal number such as "12.5" (digits and one optional point)',
      "idempotency_key: is required",
    ]);
  });

  test.each([
    ["", "amount: is required"],
    ["0", "amount: must be greater than zero"],
    ["0.000", "amount: must be greater than zero"],
    ["1e5", 'amount: must be a decimal number such as "12.5" (digits and one optional point)'],
    [" 1", 'amount: must be a decimal number such as "12.5" (digits and one optional point)'],
    ["1.", 'amount: must be a decimal number such as "12.5" (digits and one optional point)'],
    ["0.0000000000000000001", "amount: must have at most 18 fractional digits"],
    ["1000000.000000000000000001", "amount: must be at most 1000000"],
  ])("rejects the amount %j", async (amount, violation) => {
    const userId = await stack.createUser();
    const error = await rejection(
      accounts.deposit({ userId, currency: "USD", amount, idempotencyKey: newKey() }),
    );
    expect(error.code).toBe("InvalidArgument");
    expect(error.violations).toEqual([violation]);
  });

  test("accepts 18 fractional digits and the maximum itself", async () => {
    const userId = await stack.createUser();
    for (const amount of ["0.000000000000000001", "1000000"]) {
      await accounts.deposit({ userId, currency: "BTC", amount, idempotencyKey: newKey() });
    }
    expect(await balancesOf(userId)).toEqual({ BTC: "1000000.000000000000000001" });
  });

  test("rejects idempotency keys longer than 128 characters or with control characters", async () => {
    const userId = await stack.createUser();
    const base = { userId, currency: "USD", amount: "1" };
    expect(
      (await rejection(accounts.deposit({ ...base, idempotencyKey: "k".repeat(129) }))).violations,
    ).toEqual(["idempotency_key: must be at most 128 characters"]);
    expect(
      (await rejection(accounts.deposit({ ...base, idempotencyKey: "a\u0000b" }))).violations,
    ).toEqual(["idempotency_key: must not contain control characters"]);
    await accounts.deposit({ ...base, idempotencyKey: "é".repeat(128) });
    expect(await balancesOf(userId)).toEqual({ USD: "1" });
  });

  test("an unknown currency is INVALID_ARGUMENT naming the code", async () => {
    const userId = await stack.createUser();
    const error = await rejection(
      accounts.deposit({ userId, currency: "DOGE", amount: "1", idempotencyKey: newKey() }),
    );
    expect(error.code).toBe("InvalidArgument");
    expect(error.violations).toEqual(["currency: unknown currency DOGE"]);
  });

  test("an unknown user is NOT_FOUND", async () => {
    const userId = "01a20000-0000-7000-8000-000000000000";
    const error = await rejection(
      accounts.deposit({ userId, currency: "USD", amount: "1", idempotencyKey: newKey() }),
    );
    expect(error.code).toBe("NotFound");
    expect(error.message).toBe(`user ${userId} not found`);
    expect(error.info?.reason).toBe("USER_NOT_FOUND");
  });
});

describe("Withdraw", () => {
  test("debits the user to the outside world", async () => {
    const userId = await funded({ USD: "100" });
    const { transaction } = await accounts.withdraw({
      userId,
      currency: "USD",
      amount: "40.25",
      idempotencyKey: newKey(),
    });
    expect(transaction?.kind).toBe(TransactionKind.WITHDRAWAL);
    expect(transaction?.postings.map((p) => [p.account, p.amount])).toEqual([
      [`user:${userId}`, "-40.25"],
      ["external", "40.25"],
    ]);
    expect(await balancesOf(userId)).toEqual({ USD: "59.75" });
  });

  test("can take the whole balance", async () => {
    const userId = await funded({ USD: "12.5" });
    await accounts.withdraw({ userId, currency: "USD", amount: "12.5", idempotencyKey: newKey() });
    expect(await balancesOf(userId)).toEqual({ USD: "0" });
  });

  test("insufficient funds: FAILED_PRECONDITION with the shortfall, and nothing written", async () => {
    const userId = await funded({ USD: "10" });
    const before = await accounts.listTransactions({ userId });
    const key = newKey();
    const error = await rejection(
      accounts.withdraw({ userId, currency: "USD", amount: "10.5", idempotencyKey: key }),
    );
    expect(error.code).toBe("FailedPrecondition");
    expect(error.message).toContain("has 10 USD, needs 10.5 (short 0.5)");
    expect(error.preconditions).toEqual([
      expect.objectContaining({
        type: "INSUFFICIENT_FUNDS",
        subject: `user:${userId}/USD`,
        description: "available 10, required 10.5, shortfall 0.5",
      }),
    ]);
    expect(error.info?.reason).toBe("INSUFFICIENT_FUNDS");
    expect(error.info?.metadata).toEqual({
      currency: "USD",
      available: "10",
      required: "10.5",
      shortfall: "0.5",
    });
    expect(await balancesOf(userId)).toEqual({ USD: "10" });
    expect(await accounts.listTransactions({ userId })).toEqual(before);

    // A failure stores nothing under its key: once the money is there, the retry executes.
    await accounts.deposit({ userId, currency: "USD", amount: "1", idempotencyKey: newKey() });
    await accounts.withdraw({ userId, currency: "USD", amount: "10.5", idempotencyKey: key });
    expect(await balancesOf(userId)).toEqual({ USD: "0.5" });
  });

  test("a currency never held has nothing available", async () => {
    const userId = await funded({ USD: "10" });
    const error = await rejection(
      accounts.withdraw({ userId, currency: "EUR", amount: "1", idempotencyKey: newKey() }),
    );
    expect(error.code).toBe("FailedPrecondition");
    expect(error.info?.metadata).toMatchObject({ available: "0", shortfall: "1" });
    expect(await balancesOf(userId)).toEqual({ USD: "10" });
  });

  test("its own key with another payload fails with ALREADY_EXISTS, and nothing more is taken", async () => {
    const userId = await funded({ USD: "100" });
    const key = newKey();
    const first = await accounts.withdraw({
      userId,
      currency: "USD",
      amount: "10",
      idempotencyKey: key,
    });
    const error = await rejection(
      accounts.withdraw({ userId, currency: "USD", amount: "20", idempotencyKey: key }),
    );
    expect(error.code).toBe("AlreadyExists");
    expect(error.message).toBe(
      `idempotency key "${key}" was already used for another Withdraw with a different amount`,
    );
    expect(error.info?.metadata).toEqual({
      idempotency_key: key,
      rpc: "Withdraw",
      fields: "amount",
    });
    expect(await balancesOf(userId)).toEqual({ USD: "90" });
    // The original payload still replays.
    expect(
      await accounts.withdraw({ userId, currency: "USD", amount: "10", idempotencyKey: key }),
    ).toEqual(first);
    expect(await balancesOf(userId)).toEqual({ USD: "90" });
  });

  test("invalid fields, unknown currency and unknown user fail like Deposit", async () => {
    const userId = await stack.createUser();
    expect(
      (
        await rejection(
          accounts.withdraw({ userId, currency: "USD", amount: "x", idempotencyKey: "k" }),
        )
      ).code,
    ).toBe("InvalidArgument");
    expect(
      (
        await rejection(
          accounts.withdraw({ userId, currency: "ZZZ", amount: "1", idempotencyKey: "k" }),
        )
      ).violations,
    ).toEqual(["currency: unknown currency ZZZ"]);
    expect(
      (
        await rejection(
          accounts.withdraw({
            userId: "01a20000-0000-7000-8000-000000000001",
            currency: "USD",
            amount: "1",
            idempotencyKey: "k",
          }),
        )
      ).code,
    ).toBe("NotFound");
  });
});

describe("Transfer", () => {
  test("moves money from one user to another", async () => {
    const from = await funded({ EUR: "30" });
    const to = await stack.createUser();
    const { transaction } = await accounts.transfer({
      fromUserId: from,
      toUserId: to,
      currency: "EUR",
      amount: "12.345",
      idempotencyKey: newKey(),
    });
    expect(transaction?.kind).toBe(TransactionKind.TRANSFER);
    expect(transaction?.postings.map((p) => [p.account, p.amount])).toEqual([
      [`user:${from}`, "-12.345"],
      [`user:${to}`, "12.345"],
    ]);
    expect(await balancesOf(from)).toEqual({ EUR: "17.655" });
    expect(await balancesOf(to)).toEqual({ EUR: "12.345" });
    // Both users see the transfer in their history.
    for (const userId of [from, to]) {
      const { transactions } = await accounts.listTransactions({ userId });
      expect(transactions[0]?.id).toBe(transaction?.id);
    }
  });

  test("the key is the payer's: the payer's retry replays, the payee's key space is untouched", async () => {
    const from = await funded({ USD: "10" });
    const to = await stack.createUser();
    const request = {
      fromUserId: from,
      toUserId: to,
      currency: "USD",
      amount: "4",
      idempotencyKey: newKey(),
    };
    const first = await accounts.transfer(request);
    expect(await accounts.transfer(request)).toEqual(first);
    await accounts.deposit({
      userId: to,
      currency: "USD",
      amount: "1",
      idempotencyKey: request.idempotencyKey,
    });
    expect(await balancesOf(from)).toEqual({ USD: "6" });
    expect(await balancesOf(to)).toEqual({ USD: "5" });
  });

  test("the same key with another payee fails with ALREADY_EXISTS, and nothing moves", async () => {
    const from = await funded({ USD: "10" });
    const [to, other] = [await stack.createUser(), await stack.createUser()];
    const base = { fromUserId: from, currency: "USD", amount: "2", idempotencyKey: newKey() };
    await accounts.transfer({ ...base, toUserId: to });
    const error = await rejection(accounts.transfer({ ...base, toUserId: other }));
    expect(error.code).toBe("AlreadyExists");
    expect(error.info?.metadata).toMatchObject({ rpc: "Transfer", fields: "to_user_id" });
    expect(await balancesOf(from)).toEqual({ USD: "8" });
    expect((await accounts.getBalances({ userId: other })).balances).toEqual([]);
  });

  test("to self is rejected", async () => {
    const userId = await funded({ USD: "10" });
    const error = await rejection(
      accounts.transfer({
        fromUserId: userId,
        toUserId: userId.toUpperCase(),
        currency: "USD",
        amount: "1",
        idempotencyKey: newKey(),
      }),
    );
    expect(error.code).toBe("InvalidArgument");
    expect(error.violations).toEqual(["to_user_id: must differ from from_user_id"]);
  });

  test.each([
    ["payee", "to_user_id"],
    ["payer", "from_user_id"],
  ])("an unknown %s is NOT_FOUND naming the field, and nothing moves", async (_, field) => {
    const known = await funded({ USD: "10" });
    const unknown = "01a20000-0000-7000-8000-000000000002";
    const [fromUserId, toUserId] = field === "to_user_id" ? [known, unknown] : [unknown, known];
    const error = await rejection(
      accounts.transfer({
        fromUserId,
        toUserId,
        currency: "USD",
        amount: "1",
        idempotencyKey: newKey(),
      }),
    );
    expect(error.code).toBe("NotFound");
    expect(error.message).toBe(`user ${unknown} not found`);
    expect(error.info?.reason).toBe("USER_NOT_FOUND");
    expect(error.info?.metadata).toEqual({ user_id: unknown, field });
    expect(await balancesOf(known)).toEqual({ USD: "10" });
    expect((await accounts.listTransactions({ userId: known })).transactions).toHaveLength(1);
  });

  test("insufficient funds name the payer's account, and nothing moves", async () => {
    const from = await funded({ USD: "3" });
    const to = await funded({ USD: "1" });
    const error = await rejection(
      accounts.transfer({
        fromUserId: from,
        toUserId: to,
        currency: "USD",
        amount: "3.01",
        idempotencyKey: newKey(),
      }),
    );
    expect(error.code).toBe("FailedPrecondition");
    expect(error.preconditions[0]?.subject).toBe(`user:${from}/USD`);
    expect(await balancesOf(from)).toEqual({ USD: "3" });
    expect(await balancesOf(to)).toEqual({ USD: "1" });
  });

  test("reports every invalid field at once", async () => {
    const error = await rejection(
      accounts.transfer({
        fromUserId: "",
        toUserId: "x",
        currency: "",
        amount: "",
        idempotencyKey: "",
      }),
    );
    expect(error.violations).toEqual([
      "from_user_id: is required",
      "to_user_id: must be a UUID",
      "currency: is required",
      "amount: is required",
      "idempotency_key: is required",
    ]);
  });
});

describe("GetBalances", () => {
  test("lists every currency ever held, in code order, including zero", async () => {
    const userId = await funded({ USD: "1", BTC: "0.5", EUR: "2" });
    await accounts.withdraw({ userId, currency: "EUR", amount: "2", idempotencyKey: newKey() });
    const { balances } = await accounts.getBalances({ userId });
    expect(balances.map((b) => [b.currency, b.amount])).toEqual([
      ["BTC", "0.5"],
      ["EUR", "0"],
      ["USD", "1"],
    ]);
  });

  test("a user without money has no balances", async () => {
    const userId = await stack.createUser();
    expect((await accounts.getBalances({ userId })).balances).toEqual([]);
  });

  test("an invalid id is INVALID_ARGUMENT, an unknown user NOT_FOUND", async () => {
    expect((await rejection(accounts.getBalances({ userId: "" }))).violations).toEqual([
      "user_id: is required",
    ]);
    expect(
      (await rejection(accounts.getBalances({ userId: "01a20000-0000-7000-8000-000000000003" })))
        .code,
    ).toBe("NotFound");
  });
});

describe("ListTransactions", () => {
  test("pages through a user's transactions, newest first", async () => {
    const userId = await stack.createUser();
    const ids: string[] = [];
    for (let i = 1; i <= 5; i++) {
      const { transaction } = await accounts.deposit({
        userId,
        currency: "USD",
        amount: String(i),
        idempotencyKey: newKey(),
      });
      ids.unshift(transaction?.id ?? "");
    }
    const first = await accounts.listTransactions({ userId, pageSize: 2 });
    const second = await accounts.listTransactions({
      userId,
      pageSize: 2,
      pageToken: first.nextPageToken,
    });
    const third = await accounts.listTransactions({
      userId,
      pageSize: 2,
      pageToken: second.nextPageToken,
    });
    expect(
      [...first.transactions, ...second.transactions, ...third.transactions].map((t) => t.id),
    ).toEqual(ids);
    expect(third.nextPageToken).toBe("");
    expect(first.transactions[0]?.postings[1]?.amount).toBe("5");
  });

  test("a user without transactions gets an empty page", async () => {
    const userId = await stack.createUser();
    expect(await accounts.listTransactions({ userId })).toMatchObject({
      transactions: [],
      nextPageToken: "",
    });
  });

  test("bad paging input is INVALID_ARGUMENT; tokens are bound to their user", async () => {
    const a = await funded({ USD: "1", EUR: "1" });
    const b = await stack.createUser();
    const { nextPageToken } = await accounts.listTransactions({ userId: a, pageSize: 1 });
    expect(nextPageToken).not.toBe("");
    const foreign = await rejection(
      accounts.listTransactions({ userId: b, pageToken: nextPageToken }),
    );
    expect(foreign.violations).toEqual(["page_token: is not a token returned by this listing"]);
    const negative = await rejection(accounts.listTransactions({ userId: a, pageSize: -1 }));
    expect(negative.violations).toEqual(["page_size: must not be negative"]);
    const garbage = await rejection(accounts.listTransactions({ userId: a, pageToken: "abc" }));
    expect(garbage.code).toBe("InvalidArgument");
  });

  test("an invalid user_id is INVALID_ARGUMENT", async () => {
    expect((await rejection(accounts.listTransactions({ userId: "" }))).violations).toEqual([
      "user_id: is required",
    ]);
    const error = await rejection(
      accounts.listTransactions({ userId: "not-a-uuid", pageSize: -1 }),
    );
    expect(error.code).toBe("InvalidArgument");
    expect(error.violations).toEqual([
      "user_id: must be a UUID",
      "page_size: must not be negative",
    ]);
  });

  test("an unknown user is NOT_FOUND", async () => {
    const error = await rejection(
      accounts.listTransactions({ userId: "01a20000-0000-7000-8000-000000000004" }),
    );
    expect(error.code).toBe("NotFound");
  });
});
