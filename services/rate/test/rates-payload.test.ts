import { describe, expect, it } from "vitest";
import { InvalidRatesPayload, parseRatesPayload } from "../src/rates-payload.ts";
import { loadSnapshot } from "../src/snapshot.ts";

const payload = (rates: Record<string, unknown>) => JSON.stringify({ rates });
const btc = { name: "Bitcoin", unit: "BTC", value: 1, type: "crypto" };

describe("parseRatesPayload", () => {
  it("keeps every value exactly as written, never through a double", () => {
    const text =
      '{"rates":{"btc":{"name":"Bitcoin","unit":"BTC","value":1.0,"type":"crypto"},' +
      '"usd":{"name":"US Dollar","unit":"$","value":93012.123456789012345678901,"type":"fiat"},' +
      '"xau":{"name":"Gold - Troy Ounce","unit":"XAU","value":35.1,"type":"commodity"}}}';
    const table = parseRatesPayload(text);
    expect(table.values.get("USD")?.toFixed()).toBe("93012.123456789012345678901");
    expect(table.values.get("XAU")?.toFixed()).toBe("35.1");
    expect(table.currencies.map((c) => c.code)).toEqual(["BTC", "USD", "XAU"]);
    expect(table.currencies[2]).toEqual({
      code: "XAU",
      name: "Gold - Troy Ounce",
      unit: "XAU",
      type: "commodity",
    });
  });

  it("keeps odd upstream codes, upper-cased", () => {
    const table = parseRatesPayload(
      payload({ btc, bits: { ...btc, name: "Bits", value: 1e6 }, sats: { ...btc, value: 1e8 } }),
    );
    expect(table.currencies.map((c) => c.code)).toEqual(["BITS", "BTC", "SATS"]);
  });

  it.each([
    ["not JSON", "<html>oops</html>", /not JSON/],
    ["no rates object", '{"data":{}}', /"rates" object/],
    ["rates an array", '{"rates":[]}', /"rates" object/],
    ["empty rates", '{"rates":{}}', /empty/],
    ["negative value", payload({ btc: { ...btc, value: -1 } }), /btc.value: -1 is not a positive/],
    ["zero value", payload({ btc: { ...btc, value: 0 } }), /btc.value: 0 is not a positive/],
    ["value as a string", payload({ btc: { ...btc, value: "1" } }), /btc.value: not a number/],
    ["unknown type", payload({ btc: { ...btc, type: "stock" } }), /btc.type: "stock"/],
    ["missing name", payload({ btc: { ...btc, name: "" } }), /btc.name/],
    ["missing unit", payload({ btc: { ...btc, unit: 5 } }), /btc.unit/],
    ["bad code", payload({ "b-tc": btc }), /code "b-tc"/],
    ["duplicate code", payload({ btc, BTC: btc }), /BTC: duplicate code/],
    ["entry not an object", payload({ btc: 1 }), /btc: not an object/],
    ["no BTC", payload({ usd: { ...btc, name: "US Dollar", value: 93012.5 } }), /no BTC/],
    ["BTC not 1", payload({ btc: { ...btc, value: 2 } }), /BTC is 2, not 1/],
  ])("rejects the whole payload: %s", (_name, text, message) => {
    expect(() => parseRatesPayload(text)).toThrow(InvalidRatesPayload);
    expect(() => parseRatesPayload(text)).toThrow(message);
  });

  it("rejects the payload if one entry of many is bad", () => {
    const text = payload({ btc, usd: { ...btc, value: -5 } });
    expect(() => parseRatesPayload(text)).toThrow(/usd.value/);
  });

  it("accepts the bundled snapshot: ~60 currencies in the upstream format", async () => {
    const snapshot = await loadSnapshot();
    expect(snapshot.table.currencies.length).toBeGreaterThanOrEqual(60);
    for (const code of ["BTC", "ETH", "USD", "EUR", "JPY", "XAU", "XAG", "XDR", "BITS", "SATS"]) {
      expect(snapshot.table.values.has(code)).toBe(true);
    }
    expect(snapshot.table.values.get("BTC")?.toFixed()).toBe("1");
  });
});
