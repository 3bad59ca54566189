import type { CallContext } from "@coinmesh/lib/call-context";
import { AppError } from "@coinmesh/lib/errors";
import { serve } from "@coinmesh/lib/grpc-server";
import { startTestServer } from "@coinmesh/lib/testing";
import { RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import { startTestGateway } from "./harness.ts";

/** GetUser with this id waits until its call is cancelled or its deadline passes. */
export const SLOW_ID = "00000000-0000-4000-8000-000000000001";
// Nothing listens on port 1: calls to these backends fail UNAVAILABLE.
export const NOWHERE = "127.0.0.1:1";

export interface SeenCall {
  receivedAt: number;
  deadline: number | undefined;
  subject: string | undefined;
  admin: boolean;
  requestId: string;
  propagate: Record<string, string>;
}

/**
 * Stand-in user and rate services on 127.0.0.1:0 that record what each call carried (deadline,
 * subject, request id, trace context), behind a gateway of its own. Order is absent. WatchRates
 * sends one message and then stays open until its call is cancelled or its deadline passes.
 */
export async function startProbe(env: Record<string, string> = {}) {
  const seen: SeenCall[] = [];
  const record = (ctx: CallContext) =>
    seen.push({
      receivedAt: Date.now(),
      deadline: ctx.deadline,
      subject: ctx.subject,
      admin: ctx.admin,
      requestId: ctx.requestId,
      propagate: ctx.propagate,
    });
  const user = (id: string) => ({ id, email: `${id}@example.com`, displayName: "Probe" });
  const rate = (base: string, quote: string) => ({ base, quote, price: "1" });
  const backend = await startTestServer([
    serve(UserService, {
      async createUser(req, ctx) {
        record(ctx);
        return { user: user(req.email) };
      },
      async getUser(req, ctx) {
        record(ctx);
        if (req.id === SLOW_ID) {
          await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
          throw new AppError("cancelled", "gave up");
        }
        return { user: user(req.id) };
      },
      async listUsers(_req, ctx) {
        record(ctx);
        return { users: [] };
      },
      async updateUser(req, ctx) {
        record(ctx);
        return { user: user(req.user?.id ?? "") };
      },
    }),
    serve(RateService, {
      async listCurrencies() {
        return { currencies: [] };
      },
      async getRate(req) {
        return { rate: rate(req.base, req.quote) };
      },
      async getRates(req) {
        return { rates: req.quotes.map((quote) => rate(req.base, quote)) };
      },
      async *watchRates(req, ctx) {
        record(ctx);
        yield { rates: req.quotes.map((quote) => rate(req.base, quote)) };
        if (!ctx.signal.aborted) {
          await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
        }
      },
    }),
  ]);
  const gateway = await startTestGateway(
    { user: backend.address, order: NOWHERE, rate: backend.address },
    env,
  );
  return {
    gateway,
    backend,
    seen,
    last: () => seen.at(-1) as SeenCall,
    async stop() {
      await gateway.stop();
      await backend.stop();
    },
  };
}
