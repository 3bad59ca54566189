import {
  createLatencyHistogram,
  type Histogram,
  type LatencySummary,
  recordMs,
  summarize,
} from "../harness/histogram.ts";

/** Per-RPC outcome counts (by status code) and latency, as the load generator saw them. */
export function createLoadSummary() {
  const rpcs = new Map<string, { codes: Map<string, number>; latency: Histogram }>();
  let dropped = 0;
  return {
    record(rpc: string, code: string, ms: number) {
      let entry = rpcs.get(rpc);
      if (!entry) {
        entry = { codes: new Map(), latency: createLatencyHistogram() };
        rpcs.set(rpc, entry);
      }
      entry.codes.set(code, (entry.codes.get(code) ?? 0) + 1);
      recordMs(entry.latency, ms);
    },
    /** An arrival not sent because too many calls were still unanswered. */
    drop() {
      dropped++;
    },
    result() {
      const out: Record<string, { codes: Record<string, number>; latency: LatencySummary }> = {};
      for (const [rpc, entry] of [...rpcs].sort(([a], [b]) => a.localeCompare(b))) {
        out[rpc] = { codes: Object.fromEntries(entry.codes), latency: summarize(entry.latency) };
      }
      return { rpcs: out, dropped };
    },
  };
}

export type LoadResult = ReturnType<ReturnType<typeof createLoadSummary>["result"]>;

export function renderSummary(result: LoadResult, seconds: number): string {
  const rows = Object.entries(result.rpcs).map(([rpc, r]) => {
    const total = Object.values(r.codes).reduce((a, b) => a + b, 0);
    const codes = Object.entries(r.codes)
      .sort(([, a], [, b]) => b - a)
      .map(([code, n]) => `${code} ${n}`)
      .join(", ");
    const l = r.latency;
    return `${rpc.padEnd(34)} ${String(total).padStart(7)}  ${[l.p50, l.p90, l.p99, l.max].map((v) => v.toFixed(1).padStart(8)).join("")}  ${codes}`;
  });
  const total = Object.values(result.rpcs).reduce(
    (n, r) => n + Object.values(r.codes).reduce((a, b) => a + b, 0),
    0,
  );
  return [
    `${"rpc".padEnd(34)} ${"calls".padStart(7)}  ${["p50", "p90", "p99", "max"].map((h) => h.padStart(8)).join("")}  status codes (latency in ms)`,
    ...rows,
    "",
    "(WatchRates: latency is the stream's whole life, held open 5–15 s.)",
    `${total} calls in ${seconds.toFixed(1)} s (${(total / seconds).toFixed(1)}/s)${result.dropped ? `; ${result.dropped} arrivals dropped: more than the in-flight limit were unanswered` : ""}`,
  ].join("\n");
}
