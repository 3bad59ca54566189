import type { DescMessage, MessageInitShape } from "@bufbuild/protobuf";
import { createViolations } from "@coinmesh/lib/errors";
import {
  DepositRequestSchema,
  DepositResponseSchema,
  TransferRequestSchema,
  TransferResponseSchema,
  WithdrawRequestSchema,
  WithdrawResponseSchema,
} from "@coinmesh/proto/order/v1/account_pb";
import { type Decimal, formatDecimal, parseAmount } from "./amounts.ts";
import type { CurrencyCatalog } from "./currencies.ts";
import {
  EXTERNAL,
  type JournalEntry,
  move,
  type Posting,
  type TransactionKind,
  userAccount,
} from "./journal.ts";
import { counted, type LedgerMetrics, type Outcome } from "./ledger-metrics.ts";
import { transactionMessage } from "./messages.ts";
import { readPageRequest, toPage } from "./pages.ts";
import { checkCurrencyCode, checkIdempotencyKey, checkUuid } from "./request-fields.ts";
import { allInOrder, type Call } from "./upstream.ts";
import type { UsersDirectory } from "./users-directory.ts";
import type { MutatingRequest, WriteOnce } from "./write-once.ts";

/** Ledger reads; implemented in ledger-repository.ts. */
export interface LedgerReads {
  /** The user's balance in every currency it has held, in code order. */
  balances(userId: string): Promise<{ currency: string; amount: string }[]>;
  /** Entries with a posting on the user's account and an id below beforeId, newest first. */
  history(userId: string, beforeId: string | undefined, limit: number): Promise<JournalEntry[]>;
}

export interface LedgerDeps {
  writeOnce: WriteOnce;
  reads: LedgerReads;
  users: UsersDirectory;
  currencies: CurrencyCatalog;
  metrics: LedgerMetrics;
  clock: () => Date;
  newId: () => string;
  /** The largest amount one request may move. */
  maxAmount: Decimal;
}

interface MoneyRequest {
  currency: string;
  amount: string;
  idempotencyKey: string;
}

/** Deposits, withdrawals and transfers: money between users and the outside world. */
export function createLedger(deps: LedgerDeps) {
  const { writeOnce, reads, users, currencies, metrics, maxAmount } = deps;

  function readMoney(req: MoneyRequest, violations: ReturnType<typeof createViolations>) {
    return {
      currency: checkCurrencyCode(req.currency, "currency", violations),
      amount: parseAmount(req.amount, "amount", maxAmount, violations),
      key: checkIdempotencyKey(req.idempotencyKey, violations),
    };
  }

  /**
   * Writes a money movement once per key, after the user service has vouched for every party and
   * the rate service for the currency.
   */
  function execute<Req extends DescMessage, Res extends DescMessage>(
    kind: TransactionKind,
    call: Call,
    op: Omit<MutatingRequest<Req, Res>, "prepare"> & {
      parties: [id: string, field: string][];
      currency: string;
      postings: Posting[];
      response: (transaction: ReturnType<typeof transactionMessage>) => MessageInitShape<Res>;
    },
  ) {
    const prepare = async () => {
      await allInOrder([
        currencies.requireKnown([{ field: "currency", code: op.currency }], call),
        ...op.parties.map(([id, field]) => users.requireUser(id, field, call)),
      ]);
      const entry: JournalEntry = {
        id: deps.newId(),
        kind,
        userId: op.userId,
        orderId: undefined,
        createTime: deps.clock(),
        postings: op.postings,
      };
      return { entry, response: op.response(transactionMessage(entry)) };
    };
    return writeOnce({ ...op, prepare }, call);
  }

  const record = (kind: TransactionKind) => (outcome: Outcome) =>
    metrics.ledgerOperation(kind, outcome);

  return {
    deposit: (req: MoneyRequest & { userId: string }, call: Call) =>
      counted(record("deposit"), async () => {
        const violations = createViolations();
        const userId = checkUuid(req.userId, "user_id", violations);
        const { currency, amount, key } = readMoney(req, violations);
        violations.throwIfAny();
        return execute("deposit", call, {
          rpc: "Deposit",
          userId,
          key,
          requestSchema: DepositRequestSchema,
          request: { userId, currency, amount: formatDecimal(amount) },
          responseSchema: DepositResponseSchema,
          response: (transaction) => ({ transaction }),
          parties: [[userId, "user_id"]],
          currency,
          postings: move(EXTERNAL, userAccount(userId), currency, amount),
        });
      }),

    withdraw: (req: MoneyRequest & { userId: string }, call: Call) =>
      counted(record("withdrawal"), async () => {
        const violations = createViolations();
        const userId = checkUuid(req.userId, "user_id", violations);
        const { currency, amount, key } = readMoney(req, violations);
        violations.throwIfAny();
        return execute("withdrawal", call, {
          rpc: "Withdraw",
          userId,
          key,
          requestSchema: WithdrawRequestSchema,
          request: { userId, currency, amount: formatDecimal(amount) },
          responseSchema: WithdrawResponseSchema,
          response: (transaction) => ({ transaction }),
          parties: [[userId, "user_id"]],
          currency,
          postings: move(userAccount(userId), EXTERNAL, currency, amount),
        });
      }),

    transfer: (req: MoneyRequest & { fromUserId: string; toUserId: string }, call: Call) =>
      counted(record("transfer"), async () => {
        const violations = createViolations();
        const from = checkUuid(req.fromUserId, "from_user_id", violations);
        const to = checkUuid(req.toUserId, "to_user_id", violations);
        if (from !== "" && from === to) {
          violations.add("to_user_id", "must differ from from_user_id");
        }
        const { currency, amount, key } = readMoney(req, violations);
        violations.throwIfAny();
        return execute("transfer", call, {
          rpc: "Transfer",
          // The payer's key: a retry by the payer finds it.
          userId: from,
          key,
          requestSchema: TransferRequestSchema,
          request: { fromUserId: from, toUserId: to, currency, amount: formatDecimal(amount) },
          responseSchema: TransferResponseSchema,
          response: (transaction) => ({ transaction }),
          parties: [
            [from, "from_user_id"],
            [to, "to_user_id"],
          ],
          currency,
          postings: move(userAccount(from), userAccount(to), currency, amount),
        });
      }),

    async getBalances(req: { userId: string }, call: Call) {
      const violations = createViolations();
      const userId = checkUuid(req.userId, "user_id", violations);
      violations.throwIfAny();
      const balances = await reads.balances(userId);
      // A user with an account exists; only an empty answer needs the user service to tell
      // "no money yet" from "no such user".
      if (balances.length === 0) await users.requireUser(userId, "user_id", call);
      return { balances };
    },

    async listTransactions(
      req: { userId: string; pageSize: number; pageToken: string },
      call: Call,
    ) {
      const request = readPageRequest(req, "transactions");
      const entries = await reads.history(request.userId, request.before, request.limit + 1);
      if (entries.length === 0 && !request.before) {
        await users.requireUser(request.userId, "user_id", call);
      }
      const page = toPage(entries, request, "transactions");
      return {
        transactions: page.items.map(transactionMessage),
        nextPageToken: page.nextPageToken,
      };
    },
  };
}

export type Ledger = ReturnType<typeof createLedger>;
