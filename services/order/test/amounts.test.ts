import { createViolations } from "@coinmesh/lib/errors";
import { describe, expect, test } from "vitest";
import {
  Decimal,
  formatDecimal,
  isStorableMax,
  notionalOf,
  parseAmount,
  parseQuotedPrice,
} from "../src/amounts.ts";

describe("formatDecimal", () => {
  test.each([
    ["100.000000000000000000", "100"],
    ["0.500", "0.5"],
    ["-12.000001", "-12.000001"],
    ["0.000000000000000001", "0.000000000000000001"],
    ["99999999999999999999.999999999999999999", "99999999999999999999.999999999999999999"],
    ["0", "0"],
  ])("%s → %s (plain notation, no trailing zeros)", (input, output) => {
    expect(formatDecimal(input)).toBe(output);
  });
});

describe("parseAmount", () => {
  const max = new Decimal("1000");
  test("keeps the exact value of a valid amount", () => {
    const violations = createViolations();
    expect(parseAmount("0007.250", "amount", max, violations).toFixed()).toBe("7.25");
    expect(parseAmount("1.500000000000000000000", "amount", max, violations).toFixed()).toBe("1.5");
    expect(violations.count).toBe(0);
  });
});

describe("notionalOf", () => {
  const third = new Decimal("0.333333333333333333333333"); // more digits than storage keeps
  test("rounds a buy up and a sell down, at the 18th fractional digit", () => {
    expect(notionalOf("buy", new Decimal(1), third).toFixed()).toBe("0.333333333333333334");
    expect(notionalOf("sell", new Decimal(1), third).toFixed()).toBe("0.333333333333333333");
  });
  test("does not round what is exact", () => {
    expect(notionalOf("buy", new Decimal("0.5"), new Decimal("64000.5")).toFixed()).toBe(
      "32000.25",
    );
    expect(notionalOf("sell", new Decimal("0.5"), new Decimal("64000.5")).toFixed()).toBe(
      "32000.25",
    );
  });
  test("multiplies without losing digits of large values", () => {
    const quantity = new Decimal("999999999999.999999999999999999");
    const price = new Decimal("123456789.123456789123456789");
    // Checked with Python's decimal module at 200 digits.
    const exact = "123456789123456789123.456788999876543210876543210876543211";
    expect(quantity.times(price).toFixed()).toBe(exact);
    expect(notionalOf("sell", quantity, price).toFixed()).toBe(
      "123456789123456789123.45678899987654321",
    );
    expect(notionalOf("buy", quantity, price).toFixed()).toBe(
      "123456789123456789123.456788999876543211",
    );
  });
});

test("parseQuotedPrice accepts any positive scale and refuses anything else", () => {
  expect(parseQuotedPrice("0.0000000000000000000012")?.toFixed()).toBe("0.0000000000000000000012");
  for (const bad of ["", "0", "0.000", "-1", "1e3", "NaN", "1,5"]) {
    expect(parseQuotedPrice(bad), bad).toBeUndefined();
  }
});

test("isStorableMax bounds the configured maximum to numeric(38, 18)", () => {
  expect(isStorableMax(new Decimal("1e12"))).toBe(true);
  expect(isStorableMax(new Decimal("99999999999999999999.999999999999999999"))).toBe(true);
  expect(isStorableMax(new Decimal("1e20"))).toBe(false);
  expect(isStorableMax(new Decimal("0"))).toBe(false);
  expect(isStorableMax(new Decimal("0.0000000000000000001"))).toBe(false);
});
