import { AppError } from "@coinmesh/lib/errors";
import {
  DepositRequestSchema,
  DepositResponseSchema,
  TransactionKind,
} from "@coinmesh/proto/order/v1/account_pb";
import { describe, expect, test } from "vitest";
import type { JournalEntry } from "../src/journal.ts";
import {
  createWriteOnce,
  type JournalStore,
  type JournalWrite,
  type MutatingRequest,
  type StoredResult,
} from "../src/write-once.ts";

/** Keeps results in a map; `outcome` overrides what the next write reports. */
function memoryJournal() {
  const stored = new Map<string, StoredResult>();
  const writes: JournalWrite[] = [];
  const journal: JournalStore & { next?: "insufficient" } = {
    async write(w) {
      writes.push(w);
      if (journal.next === "insufficient") {
        return {
          status: "insufficient",
          userId: w.userId,
          currency: "USD",
          available: "1.50",
          required: "4",
        };
      }
      const existing = stored.get(`${w.userId}/${w.key}`);
      if (existing) return { status: "duplicate", stored: existing };
      stored.set(`${w.userId}/${w.key}`, { rpc: w.rpc, request: w.request, response: w.response });
      return { status: "written" };
    },
    async findResult(userId, key) {
      return stored.get(`${userId}/${key}`);
    },
  };
  return { journal, writes, writeOnce: createWriteOnce(journal) };
}

const entry = (amount = "5"): JournalEntry => ({
  id: "tx-1",
  kind: "deposit",
  userId: "u",
  orderId: undefined,
  createTime: new Date("2026-11-01T00:00:00Z"),
  postings: [
    { account: "external", currency: "USD", amount: `-${amount}` },
    { account: "user:u", currency: "USD", amount },
  ],
});

function deposit(
  amount: string,
  prepare?: MutatingRequest<typeof DepositRequestSchema, typeof DepositResponseSchema>["prepare"],
): MutatingRequest<typeof DepositRequestSchema, typeof DepositResponseSchema> {
  return {
    rpc: "Deposit",
    userId: "u",
    key: "k",
    requestSchema: DepositRequestSchema,
    request: { userId: "u", currency: "USD", amount },
    responseSchema: DepositResponseSchema,
    prepare:
      prepare ??
      (async () => ({
        entry: entry(amount),
        response: { transaction: { id: `tx-${amount}`, kind: TransactionKind.DEPOSIT } },
      })),
  };
}

describe("writeOnce", () => {
  test("writes the first attempt and replays its response to the next", async () => {
    const { writes, writeOnce } = memoryJournal();
    const first = await writeOnce(deposit("5"), {});
    const again = await writeOnce(deposit("5"), {});
    expect(again).toEqual(first);
    expect(first.transaction?.id).toBe("tx-5");
    expect(writes).toHaveLength(2); // the second attempt found the key taken
  });

  test("a retry whose preparation fails still gets the stored result", async () => {
    const { writes, writeOnce } = memoryJournal();
    const first = await writeOnce(deposit("5"), {});
    const retry = await writeOnce(
      deposit("5", async () => {
        throw new AppError("unavailable", "the price of BTC/USD is unavailable");
      }),
      {},
    );
    expect(retry).toEqual(first);
    expect(writes).toHaveLength(1);
  });

  test("a preparation failure without a stored result is the caller's error", async () => {
    const { writes, writeOnce } = memoryJournal();
    const failing = deposit("5", async () => {
      throw new AppError("unavailable", "down");
    });
    await expect(writeOnce(failing, {})).rejects.toThrow("down");
    expect(writes).toEqual([]);
  });

  test("another payload under a taken key is ALREADY_EXISTS naming the fields", async () => {
    const { writeOnce } = memoryJournal();
    await writeOnce(deposit("5"), {});
    const error = await writeOnce(deposit("6"), {}).catch((err: AppError) => err);
    expect(error).toBeInstanceOf(AppError);
    expect((error as AppError).kind).toBe("already_exists");
    expect((error as AppError).details.metadata).toEqual({
      idempotency_key: "k",
      rpc: "Deposit",
      fields: "amount",
    });
  });

  describe("while the first attempt is still preparing", () => {
    /** A deposit whose preparation waits until `release` is called. */
    function stalledDeposit(amount: string) {
      let release = () => {};
      const released = new Promise<void>((resolve) => {
        release = resolve;
      });
      const op = deposit(amount);
      const prepare = op.prepare;
      return { op: { ...op, prepare: () => released.then(prepare) }, release };
    }
    const failingPrepare = async (): Promise<never> => {
      throw new AppError("unavailable", "the price of BTC/USD is unavailable");
    };
    /** Lets every pending promise callback run. */
    const settle = () => new Promise((resolve) => setTimeout(resolve, 10));

    test("a retry whose own checks would fail waits and gets the first attempt's result", async () => {
      const { writes, writeOnce } = memoryJournal();
      const first = stalledDeposit("5");
      const firstResult = writeOnce(first.op, {});
      let prepared = 0;
      const retry = writeOnce(
        deposit("5", () => {
          prepared++;
          return failingPrepare();
        }),
        {},
      );
      await settle();
      first.release();
      expect(await retry).toEqual(await firstResult);
      expect(prepared).toBe(0);
      expect(writes).toHaveLength(1);
    });

    test("a retry with another payload gets ALREADY_EXISTS once the first one is stored", async () => {
      const { writes, writeOnce } = memoryJournal();
      const first = stalledDeposit("5");
      const firstResult = writeOnce(first.op, {});
      const other = writeOnce(deposit("6", failingPrepare), {}).catch((err: AppError) => err);
      await settle();
      first.release();
      await firstResult;
      expect(await other).toMatchObject({
        kind: "already_exists",
        details: { metadata: { idempotency_key: "k", rpc: "Deposit", fields: "amount" } },
      });
      expect(writes).toHaveLength(1);
    });

    test("if the first attempt fails, a waiting retry executes itself", async () => {
      const { writes, writeOnce } = memoryJournal();
      let release = () => {};
      const failing = writeOnce(
        deposit("5", async () => {
          await new Promise<void>((resolve) => {
            release = resolve;
          });
          throw new AppError("unavailable", "the user service is unavailable");
        }),
        {},
      );
      const retry = writeOnce(deposit("5"), {});
      await settle();
      release();
      await expect(failing).rejects.toThrow("the user service is unavailable");
      expect((await retry).transaction?.id).toBe("tx-5");
      expect(writes).toHaveLength(1);
    });
  });

  test("a short balance becomes FAILED_PRECONDITION with canonical figures", async () => {
    const { journal, writeOnce } = memoryJournal();
    journal.next = "insufficient";
    const error = (await writeOnce(deposit("4"), {}).catch((err) => err)) as AppError;
    expect(error.kind).toBe("failed_precondition");
    expect(error.details.metadata).toEqual({
      currency: "USD",
      available: "1.5",
      required: "4",
      shortfall: "2.5",
    });
  });

  test("a caller that has gone away gets no write", async () => {
    const { writes, writeOnce } = memoryJournal();
    const controller = new AbortController();
    controller.abort(new AppError("cancelled", "call cancelled"));
    await expect(writeOnce(deposit("5"), { signal: controller.signal })).rejects.toThrow(
      "call cancelled",
    );
    expect(writes).toEqual([]);
  });

  test("an unbalanced entry is a bug and is never written", async () => {
    const { writes, writeOnce } = memoryJournal();
    const broken = deposit("5", async () => {
      const e = entry("5");
      e.postings[1] = { account: "user:u", currency: "USD", amount: "5.000000000000000001" };
      return { entry: e, response: {} };
    });
    await expect(writeOnce(broken, {})).rejects.toThrow("unbalanced entry");
    expect(writes).toEqual([]);
  });
});
