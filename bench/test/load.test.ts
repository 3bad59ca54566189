import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { checkSettings, LIMITS, parseDuration } from "../load/limits.ts";
import { createLoadSummary, renderSummary } from "../load/summary.ts";
import { codeName } from "../load/traffic.ts";

describe("npm run load settings", () => {
  it("accepts loopback targets within the bounds", () => {
    const s = checkSettings({ target: "http://127.0.0.1:8080", rate: "50", duration: "2m" });
    expect(s).toMatchObject({ rate: 50, durationS: 120, maxRequests: LIMITS.maxRequests });
    expect(
      checkSettings({ target: "http://localhost:1", rate: "1", duration: "1" }).durationS,
    ).toBe(1);
    expect(
      checkSettings({ target: "http://[::1]:8080", rate: "1", duration: "1h" }).durationS,
    ).toBe(3_600);
  });

  it("refuses anything but loopback, and reports every bad setting at once", () => {
    expect(() =>
      checkSettings({
        target: "http://10.0.0.7:8080",
        rate: "0",
        duration: "2h",
        maxRequests: "0",
      }),
    ).toThrow(
      /10\.0\.0\.7 is not loopback[\s\S]*--rate[\s\S]*--duration must be[\s\S]*--max-requests/,
    );
    expect(() => checkSettings({ target: "https://127.0.0.1", rate: "1", duration: "1" })).toThrow(
      /http:\/\//,
    );
    expect(() => checkSettings({ target: "nonsense", rate: "1", duration: "1" })).toThrow(
      /not a URL/,
    );
    expect(() =>
      checkSettings({
        target: "http://127.0.0.1",
        rate: String(LIMITS.maxRate + 1),
        duration: "1",
      }),
    ).toThrow(/--rate/);
  });

  it("parses durations", () => {
    expect(parseDuration("90")).toBe(90);
    expect(parseDuration("1.5m")).toBe(90);
    expect(() => parseDuration("1d")).toThrow(/--duration/);
  });
});

describe("load summary", () => {
  it("names Connect codes as gRPC does and counts each RPC by code", () => {
    expect(codeName(new ConnectError("x", Code.ResourceExhausted))).toBe("RESOURCE_EXHAUSTED");
    expect(codeName(new ConnectError("x", Code.NotFound))).toBe("NOT_FOUND");
    expect(codeName(new Error("not connect"))).toBe("UNKNOWN");
    const summary = createLoadSummary();
    summary.record("RateService/GetRate", "OK", 2);
    summary.record("RateService/GetRate", "OK", 4);
    summary.record("RateService/GetRate", "UNAVAILABLE", 1);
    summary.drop();
    const result = summary.result();
    expect(result.rpcs["RateService/GetRate"]?.codes).toEqual({ OK: 2, UNAVAILABLE: 1 });
    expect(result.dropped).toBe(1);
    expect(renderSummary(result, 1)).toMatch(/RateService\/GetRate\s+3 .*OK 2, UNAVAILABLE 1/);
  });
});
