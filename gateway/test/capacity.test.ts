import { AppError } from "@coinmesh/lib/errors";
import { serve } from "@coinmesh/lib/grpc-server";
import { startTestServer, type TestServer } from "@coinmesh/lib/testing";
import { RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestGateway, type TestGateway } from "./harness.ts";

// A rate backend whose GetRate answers only when the test says so.
let release: () => void = () => {};
let backend: TestServer;
let gateway: TestGateway;
const unused = async (): Promise<never> => {
  throw new AppError("internal", "not part of this test");
};

beforeAll(async () => {
  backend = await startTestServer([
    serve(RateService, {
      async getRate(req) {
        await new Promise<void>((resolve) => {
          release = resolve;
        });
        return { rate: { base: req.base, quote: req.quote, price: "1" } };
      },
      listCurrencies: unused,
      getRates: unused,
      async *watchRates() {},
    }),
  ]);
  gateway = await startTestGateway(
    { user: backend.address, order: backend.address, rate: backend.address },
    { MAX_IN_FLIGHT: "1" },
  );
});

afterAll(async () => {
  release();
  await gateway?.stop();
  await backend?.stop();
});

// The fast path (HTTP/2) refuses before reading the body; connect-node's path before forwarding.
describe.each(["connect-binary-h2", "grpc", "connect-json-h1"] as const)(
  "capacity over %s",
  (protocol) => {
    it("refuses calls past MAX_IN_FLIGHT at once with RESOURCE_EXHAUSTED, then recovers", async () => {
      const rates = gateway.client(RateService, protocol);
      const first = rates.getRate({ base: "BTC", quote: "USD" });
      await new Promise((r) => setTimeout(r, 200));
      const startedAt = Date.now();
      const refused = await rates.getRate({ base: "BTC", quote: "EUR" }).then(
        () => undefined,
        (err: unknown) => ConnectError.from(err),
      );
      expect(refused?.code).toBe(Code.ResourceExhausted);
      expect(Date.now() - startedAt).toBeLessThan(1_000);
      release();
      expect((await first).rate?.quote).toBe("USD");
      const again = rates.getRate({ base: "BTC", quote: "XAU" });
      await new Promise((r) => setTimeout(r, 100));
      release();
      expect((await again).rate?.quote).toBe("XAU");
    });
  },
);

it.each(["connect-binary-h2", "grpc-web-h2", "grpc"] as const)(
  "over %s, refuses at capacity before spending anything on the call (not even its token)",
  async (protocol) => {
    const rates = gateway.client(RateService, protocol);
    const first = rates.getRate({ base: "BTC", quote: "USD" });
    await new Promise((r) => setTimeout(r, 200));
    const refused = await rates
      .getRate({ base: "BTC", quote: "EUR" }, { headers: { authorization: "Bearer not-a-jwt" } })
      .then(
        () => undefined,
        (err: unknown) => ConnectError.from(err),
      );
    expect(refused?.code).toBe(Code.ResourceExhausted);
    release();
    await first;
  },
);
