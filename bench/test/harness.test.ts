// The harness's building blocks at tiny scale, so that `npm run bench` cannot rot unnoticed.
// No timing assertions: only that each piece measures, counts and reports what happened.
import { execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { driveLoad } from "../harness/drive.ts";
import { runH2load } from "../harness/h2load.ts";
import { renderMarkdown } from "../harness/report.ts";
import { check, median, pairedRatio, repeated } from "../harness/results.ts";
import { type Runnable, startRunnable } from "../harness/runnable.ts";
import { rawGrpcRequest } from "../harness/wire.ts";
import { ECHO_PATH } from "../reference/echo-server.ts";

const hasH2load = (() => {
  try {
    execFileSync("h2load", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    if (process.env.CI) throw new Error("CI is set but h2load (nghttp2-client) is not installed");
    return false;
  }
})();

const payload = Buffer.from("a GetRate-sized payload, echoed back untouched");
let echo: Runnable;

beforeAll(async () => {
  echo = await startRunnable({ name: "echo", entry: "bench/reference/echo-server.ts" });
});
afterAll(async () => {
  await echo?.stop();
});

describe("load generators against the echo reference", () => {
  it("open loop sends exactly rate × duration requests, all OK, and meters every process", async () => {
    const result = await driveLoad({
      mode: "open",
      origin: `http://${echo.address}`,
      requests: [rawGrpcRequest(ECHO_PATH, payload)],
      rate: 200,
      workers: 2,
      warmupMs: 200,
      durationMs: 1_000,
      processes: { echo: echo.pid },
    });
    expect(result.statuses).toEqual({ OK: 200 });
    expect(result.latency.count).toBe(200);
    expect(result.sendLag?.count).toBe(200);
    expect(result.latency.p50).toBeGreaterThan(0);
    expect(result.latency.max).toBeGreaterThanOrEqual(result.latency.p99);
    // "steal" appears too when the hypervisor took CPU from this machine during the run.
    const measured = Object.keys(result.usage).filter((name) => name !== "steal");
    expect(measured.sort()).toEqual(["echo", "generator", "machine"]);
    expect(result.usage.machine?.cpuSeconds).toBeGreaterThanOrEqual(
      result.usage.echo?.cpuSeconds ?? 0,
    );
    expect(result.usage.echo?.peakRssMb).toBeGreaterThan(10);
  });

  it("closed loop keeps requests in flight and reports a throughput", async () => {
    const result = await driveLoad({
      mode: "closed",
      origin: `http://${echo.address}`,
      requests: [rawGrpcRequest(ECHO_PATH, payload)],
      concurrency: 4,
      workers: 1,
      warmupMs: 100,
      durationMs: 500,
    });
    expect(result.throughput).toBeGreaterThan(0);
    expect(Object.keys(result.statuses)).toEqual(["OK"]);
  });

  it("counts a failing call by its gRPC status, not as a success", async () => {
    const result = await driveLoad({
      mode: "open",
      origin: `http://${echo.address}`,
      requests: [rawGrpcRequest("/coinmesh.bench.v1.Echo/NoSuchMethod", payload)],
      rate: 50,
      workers: 1,
      warmupMs: 0,
      durationMs: 200,
    });
    expect(result.statuses).toEqual({ UNIMPLEMENTED: 10 });
    expect(result.throughput).toBe(0);
  });

  it.skipIf(!hasH2load)("h2load runs closed-loop with its own CPU and RSS measured", async () => {
    const result = await runH2load({
      origin: `http://${echo.address}`,
      request: rawGrpcRequest(ECHO_PATH, payload),
      clients: 1,
      streams: 4,
      warmupS: 0,
      durationS: 1,
      processes: { echo: echo.pid },
    });
    expect(result.throughput).toBeGreaterThan(0);
    expect(result.statuses["HTTP 2xx"]).toBeGreaterThan(0);
    // h2load's per-request log may miss the few answers that land as the window closes.
    expect(result.latency.count).toBeGreaterThan(0.95 * (result.statuses["HTTP 2xx"] ?? 0));
    expect(result.usage.generator?.peakRssMb).toBeGreaterThan(0);
    expect(result.usage.echo?.cpuSeconds).toBeGreaterThan(0);
  });
});

describe("figures and report", () => {
  it("takes medians and pairs each subject run with its reference", () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
    // Per-pair ratios 0.5, 0.8, 0.6: the median is 0.6, not the ratio of medians.
    expect(pairedRatio([50, 80, 60], [100, 100, 100])).toBe(0.6);
  });

  it("renders every target with its verdict and every run with its figures", () => {
    const run = {
      tool: "h2load" as const,
      mode: "closed" as const,
      throughput: 1234,
      statuses: { "HTTP 2xx": 4936 },
      latency: { count: 4936, p50: 1, p90: 2, p99: 3, p999: 4, max: 5 },
      usage: { echo: { cpuSeconds: 4, cpuCores: 1, peakRssMb: 99 } },
    };
    const markdown = renderMarkdown({
      startedAt: "2026-01-01T00:00:00.000Z",
      finishedAt: "2026-01-01T00:01:00.000Z",
      filter: undefined,
      repetitions: 1,
      machine: {
        nproc: 2,
        cpuModel: "test CPU",
        memoryGb: 1,
        node: "v24",
        tools: {},
        loadBefore: [1, 1, 1],
        loadAfter: [1, 1, 1],
      },
      scenarios: [
        {
          name: "demo",
          title: "Demo",
          seconds: 1,
          notes: ["a note"],
          runs: [repeated("echo", [run])],
          targets: [
            // Two decimals would show 0.25 against a threshold of 0.25 and call it NOT MET.
            check("fast enough", "1234/s", 0.2473, ">=", 0.25, "because of X"),
            check("small enough", "99 MB", 99, "<=", 150),
          ],
        },
      ],
    });
    expect(markdown).toContain(
      "| fast enough | 1234/s | >= 0.25 | 0.247 | **NOT MET** — because of X |",
    );
    expect(markdown).toContain("| small enough | 99 MB | <= 150 | 99.000 | met |");
    expect(markdown).toContain(
      "| echo | h2load | closed | 1,234 | 1.00 | 2.00 | 3.00 | 4.00 | 5.00 |",
    );
    expect(markdown).toContain("- a note");
  });
});
