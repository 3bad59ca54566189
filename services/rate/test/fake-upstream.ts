import { once } from "node:events";
import { createServer, type IncomingHttpHeaders, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/** What the next requests get. */
export type UpstreamMode =
  | "ok"
  /** HTTP 500. */
  | "error"
  /** Headers never sent: the client's timeout must fire. */
  | "stall"
  /** HTTP 429 with the configured Retry-After. */
  | "rate_limited"
  /** Not JSON at all. */
  | "garbage"
  /** JSON in the wrong shape: a negative value. */
  | "malformed";

export interface FakeCurrency {
  name: string;
  unit: string;
  /** The JSON number's exact text, e.g. "93012.50". */
  value: string;
  type: string;
}

export const DEFAULT_RATES: Record<string, FakeCurrency> = {
  btc: { name: "Bitcoin", unit: "BTC", value: "1.0", type: "crypto" },
  eth: { name: "Ether", unit: "ETH", value: "30.5", type: "crypto" },
  usd: { name: "US Dollar", unit: "$", value: "93012.5", type: "fiat" },
  eur: { name: "Euro", unit: "€", value: "80368.45", type: "fiat" },
  xau: { name: "Gold - Troy Ounce", unit: "XAU", value: "35.1", type: "commodity" },
  bits: { name: "Bits", unit: "μBTC", value: "1000000.0", type: "crypto" },
  sats: { name: "Satoshi", unit: "sats", value: "100000000.0", type: "crypto" },
};

/**
 * A local stand-in for CoinGecko's `GET /api/v3/exchange_rates`, speaking its exact format,
 * that can fail, stall, rate-limit and return garbage on demand and counts what it serves.
 */
export async function startFakeUpstream() {
  const rates: Record<string, FakeCurrency> = structuredClone(DEFAULT_RATES);
  const stalled = new Set<ServerResponse>();
  const state = {
    mode: "ok" as UpstreamMode,
    /** Modes for the next requests, one each, before `mode` applies again. */
    next: [] as UpstreamMode[],
    retryAfter: "30",
    /** Delay before answering "ok", so concurrent callers overlap one request. */
    delayMs: 0,
    /** While set, "ok" answers wait for it: a refresh the test holds open as long as it likes. */
    gate: undefined as Promise<void> | undefined,
    requests: 0,
    /** When each request arrived, in performance.now() milliseconds. */
    arrivals: [] as number[],
    lastHeaders: undefined as IncomingHttpHeaders | undefined,
  };
  const body = () =>
    `{"rates":{${Object.entries(rates)
      .map(
        ([code, c]) =>
          `${JSON.stringify(code)}:{"name":${JSON.stringify(c.name)},"unit":${JSON.stringify(c.unit)},"value":${c.value},"type":${JSON.stringify(c.type)}}`,
      )
      .join(",")}}}`;

  const server = createServer((req, res) => {
    if (req.url !== "/api/v3/exchange_rates") {
      res.writeHead(404).end('{"error":"not found"}');
      return;
    }
    state.requests++;
    state.arrivals.push(performance.now());
    state.lastHeaders = req.headers;
    switch (state.next.shift() ?? state.mode) {
      case "ok": {
        const text = body();
        const send = () => res.writeHead(200, { "content-type": "application/json" }).end(text);
        const answer = () => (state.delayMs > 0 ? setTimeout(send, state.delayMs) : send());
        if (state.gate) state.gate.then(answer);
        else answer();
        return;
      }
      case "error":
        res.writeHead(500, { "content-type": "application/json" }).end('{"error":"boom"}');
        return;
      case "stall":
        stalled.add(res);
        res.on("close", () => stalled.delete(res));
        return;
      case "rate_limited":
        res
          .writeHead(429, { "retry-after": state.retryAfter, "content-type": "application/json" })
          .end('{"status":{"error_code":429,"error_message":"You\'ve exceeded the Rate Limit."}}');
        return;
      case "garbage":
        res.writeHead(200, { "content-type": "text/html" }).end("<html>502 Bad Gateway</html>");
        return;
      case "malformed":
        res
          .writeHead(200, { "content-type": "application/json" })
          .end('{"rates":{"btc":{"name":"Bitcoin","unit":"BTC","value":-1,"type":"crypto"}}}');
        return;
    }
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    state,
    rates,
    /** Sets one currency's value, given as the exact JSON number text. */
    setValue(code: string, value: string) {
      const currency = rates[code];
      if (!currency) throw new Error(`no ${code} in the fake upstream`);
      currency.value = value;
    },
    /** Drops a currency from the next answers. */
    remove(code: string) {
      delete rates[code];
    },
    async close() {
      for (const res of stalled) res.destroy();
      server.closeAllConnections();
      server.close();
      await once(server, "close");
    },
  };
}

export type FakeUpstream = Awaited<ReturnType<typeof startFakeUpstream>>;
