import {
  create,
  type DescMessage,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { AppError } from "@coinmesh/lib/errors";
import { Decimal, formatDecimal } from "./amounts.ts";
import { assertBalanced, type JournalEntry, type OrderRecord } from "./journal.ts";
import type { Call } from "./upstream.ts";

/** What a successful request left behind under its idempotency key. */
export interface StoredResult {
  rpc: string;
  request: Uint8Array;
  response: Uint8Array;
}

/** Everything one request writes, in one transaction. */
export interface JournalWrite {
  userId: string;
  key: string;
  rpc: string;
  request: Uint8Array;
  response: Uint8Array;
  entry: JournalEntry;
  order: OrderRecord | undefined;
}

export type WriteOutcome =
  | { status: "written" }
  /** The key was taken (perhaps by an attempt that was still running); nothing was written. */
  | { status: "duplicate"; stored: StoredResult }
  /** A user account would go negative; nothing was written. */
  | {
      status: "insufficient";
      userId: string;
      currency: string;
      available: string;
      required: string;
    };

/** Storage of journal entries and idempotency keys; implemented in journal-repository.ts. */
export interface JournalStore {
  write(write: JournalWrite): Promise<WriteOutcome>;
  /** The result stored under a key, after waiting for an attempt still running; or undefined. */
  findResult(userId: string, key: string): Promise<StoredResult | undefined>;
}

export interface MutatingRequest<Req extends DescMessage, Res extends DescMessage> {
  rpc: string;
  /** The idempotency scope. */
  userId: string;
  key: string;
  requestSchema: Req;
  /** The validated request in canonical form, without its key: what "the same payload" means. */
  request: MessageInitShape<Req>;
  responseSchema: Res;
  /** Checks and quotes that need other services. Runs before anything is written. */
  prepare(): Promise<{
    entry: JournalEntry;
    order?: OrderRecord;
    response: MessageInitShape<Res>;
  }>;
}

/** Executes a mutating request at most once per (user, key); see createWriteOnce. */
export type WriteOnce = <Req extends DescMessage, Res extends DescMessage>(
  op: MutatingRequest<Req, Res>,
  call: Call,
) => Promise<MessageShape<Res>>;

/**
 * Executes mutating requests at most once per (user, key): the first success is stored with its
 * response bytes in the same transaction as its entry, and every retry with the same payload gets
 * those bytes back. Failures store nothing, so retrying a failed request executes it again.
 *
 * A retry that arrives while the first attempt is still running waits for it. In this process it
 * waits before its own preparation, so the first attempt's result is its answer even if its own
 * checks would fail (a dependency down, a price past the limit). An attempt running in another
 * process is found only once its transaction has taken the key (the key's row lock makes the retry
 * wait); before that, a retry whose checks fail answers with its own error (README, Idempotency).
 */
export function createWriteOnce(journal: JournalStore): WriteOnce {
  /** Attempts running in this process by (user, key); each ends with what it stored, if anything. */
  const running = new Map<string, Promise<StoredResult | undefined>>();

  return async (op, call) => {
    const request = toBinary(op.requestSchema, create(op.requestSchema, op.request));
    const id = JSON.stringify([op.userId, op.key]);
    for (let earlier = running.get(id); earlier; earlier = running.get(id)) {
      const stored = await earlier;
      if (stored) return replay(op, request, stored);
    }
    const attempt = execute(journal, op, request, call);
    const settled = attempt.then(
      (s) => s.stored,
      () => undefined,
    );
    running.set(id, settled);
    try {
      return (await attempt).response;
    } finally {
      if (running.get(id) === settled) running.delete(id);
    }
  };
}

/** One attempt: its result, and what is stored under its key once it succeeded. */
async function execute<Req extends DescMessage, Res extends DescMessage>(
  journal: JournalStore,
  op: MutatingRequest<Req, Res>,
  request: Uint8Array,
  call: Call,
): Promise<{ response: MessageShape<Res>; stored: StoredResult }> {
  let prepared: Awaited<ReturnType<typeof op.prepare>>;
  try {
    prepared = await op.prepare();
  } catch (err) {
    // A retry of a request that already succeeded gets its result, even when a dependency is now
    // down or the price has since crossed its limit. If the lookup fails too, the first error is
    // the one worth reporting.
    const stored = await journal.findResult(op.userId, op.key).catch(() => undefined);
    if (stored) return { response: replay(op, request, stored), stored };
    throw err;
  }
  // A caller that has given up gets no write behind its back.
  if (call.signal?.aborted) throw call.signal.reason;
  assertBalanced(prepared.entry.postings);
  const response = create(op.responseSchema, prepared.response);
  const responseBytes = toBinary(op.responseSchema, response);
  const outcome = await journal.write({
    userId: op.userId,
    key: op.key,
    rpc: op.rpc,
    request,
    response: responseBytes,
    entry: prepared.entry,
    order: prepared.order,
  });
  switch (outcome.status) {
    case "written":
      return { response, stored: { rpc: op.rpc, request, response: responseBytes } };
    case "duplicate":
      return { response: replay(op, request, outcome.stored), stored: outcome.stored };
    case "insufficient":
      throw insufficientFunds(outcome);
  }
}

function replay<Req extends DescMessage, Res extends DescMessage>(
  op: MutatingRequest<Req, Res>,
  request: Uint8Array,
  stored: StoredResult,
): MessageShape<Res> {
  if (stored.rpc !== op.rpc) {
    throw keyReused(op.key, stored.rpc, `was already used for ${stored.rpc}`, []);
  }
  if (!Buffer.from(stored.request).equals(request)) {
    const fields = differingFields(op.requestSchema, stored.request, request);
    const which =
      fields.length === 0
        ? ""
        : fields.length === 1
          ? ` with a different ${fields[0]}`
          : ` with different ${fields.slice(0, -1).join(", ")} and ${fields.at(-1)}`;
    throw keyReused(op.key, stored.rpc, `was already used for another ${op.rpc}${which}`, fields);
  }
  return fromBinary(op.responseSchema, stored.response);
}

function differingFields(schema: DescMessage, a: Uint8Array, b: Uint8Array): string[] {
  const x = fromBinary(schema, a) as Record<string, unknown>;
  const y = fromBinary(schema, b) as Record<string, unknown>;
  // Requests are flat: strings, enums and optional strings compare with Object.is.
  return schema.fields.filter((f) => !Object.is(x[f.localName], y[f.localName])).map((f) => f.name);
}

function keyReused(key: string, rpc: string, what: string, fields: string[]): AppError {
  return new AppError("already_exists", `idempotency key ${JSON.stringify(key)} ${what}`, {
    reason: "IDEMPOTENCY_KEY_REUSED",
    metadata: { idempotency_key: key, rpc, fields: fields.join(",") },
  });
}

function insufficientFunds(o: {
  userId: string;
  currency: string;
  available: string;
  required: string;
}) {
  const available = formatDecimal(o.available);
  const required = formatDecimal(o.required);
  const shortfall = formatDecimal(new Decimal(o.required).minus(o.available));
  return new AppError(
    "failed_precondition",
    `insufficient funds: user ${o.userId} has ${available} ${o.currency}, needs ${required} (short ${shortfall})`,
    {
      preconditions: [
        {
          type: "INSUFFICIENT_FUNDS",
          subject: `user:${o.userId}/${o.currency}`,
          description: `available ${available}, required ${required}, shortfall ${shortfall}`,
        },
      ],
      reason: "INSUFFICIENT_FUNDS",
      metadata: { currency: o.currency, available, required, shortfall },
    },
  );
}
