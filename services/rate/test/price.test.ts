import { Decimal } from "decimal.js";
import { describe, expect, it } from "vitest";
import { derivePrice } from "../src/price.ts";

const price = (base: string, quote: string) => derivePrice(new Decimal(base), new Decimal(quote));

describe("derivePrice", () => {
  it("divides quote by base exactly", () => {
    expect(price("1", "93012.5")).toBe("93012.5");
    // 0.864060744523585539578... rounds to ...540, the trailing zero trimmed.
    expect(price("93012.5", "80368.45")).toBe("0.86406074452358554");
    expect(price("4", "1")).toBe("0.25");
  });

  it("rounds to 18 fractional digits and trims trailing zeros, never in exponent form", () => {
    expect(price("3", "1")).toBe("0.333333333333333333");
    expect(price("3", "2")).toBe("0.666666666666666667");
    expect(price("93012.5", "1")).toBe("0.000010751243112485");
    expect(price("1", "0.0000001")).toBe("0.0000001");
    expect(price("1", "123456789012345678.5")).toBe("123456789012345678.5");
  });

  it("rounds a tie half to even, and a near-tie by its exact value", () => {
    expect(price("1", "0.0000000000000000025")).toBe("0.000000000000000002");
    expect(price("1", "0.0000000000000000035")).toBe("0.000000000000000004");
    // 1.5000000000000000015 / 3 = 0.5000000000000000005 exactly: a tie, kept even.
    expect(price("3", "1.5000000000000000015")).toBe("0.5");
    // Just above the tie: rounds up although 40 digits of the quotient would look like a tie.
    expect(price("3", "1.500000000000000001500000000000000000000000000000000000000000001")).toBe(
      "0.500000000000000001",
    );
  });

  it("refuses prices that 18 fractional digits cannot carry", () => {
    expect(price("1", "0.0000000000000000005")).toBeUndefined();
    expect(price("1", "100000000000000000000")).toBeUndefined();
  });
});
