import { get } from "node:http";

/**
 * One request on a fresh connection: a pooled keep-alive connection may be closed by the server
 * (5 s idle) just as the next reading, one run later, reuses it.
 */
function scrape(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    get({ host: "127.0.0.1", port, path: "/metrics", agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        body += chunk;
      });
      res.on("end", () =>
        res.statusCode === 200 ? resolve(body) : reject(new Error(`/metrics: ${res.statusCode}`)),
      );
    }).once("error", reject);
  });
}

/**
 * The server's own count of finished calls per status code for one method, from its Prometheus
 * `grpc_server_handled_total`: the ground truth behind h2load's "HTTP 2xx", which a gRPC error
 * also is.
 */
export async function handledByCode(
  metricsPort: number,
  method: string,
): Promise<Record<string, number>> {
  const text = await scrape(metricsPort);
  const counts: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const sample = /^grpc_server_handled_total\{([^}]*)\}\s+(\S+)/.exec(line);
    if (!sample?.[1]?.includes(`grpc_method="${method}"`)) continue;
    const code = /grpc_code="([A-Z_]+)"/.exec(sample[1])?.[1];
    if (code) counts[code] = (counts[code] ?? 0) + Number(sample[2]);
  }
  return counts;
}

/** Calls finished per code between two readings. */
export function codesBetween(
  before: Record<string, number>,
  after: Record<string, number>,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [code, n] of Object.entries(after)) {
    const delta = n - (before[code] ?? 0);
    if (delta > 0) out[code] = delta;
  }
  return out;
}

/** Count and total seconds of the calls a process made to other services, per method. */
export async function clientCallTotals(
  metricsPort: number,
): Promise<Record<string, { count: number; seconds: number }>> {
  const totals: Record<string, { count: number; seconds: number }> = {};
  for (const line of (await scrape(metricsPort)).split("\n")) {
    const sample = /^grpc_client_handling_seconds_(sum|count)\{([^}]*)\}\s+(\S+)/.exec(line);
    const method = sample && /grpc_method="(\w+)"/.exec(sample[2] ?? "")?.[1];
    if (!sample || !method) continue;
    const entry = totals[method] ?? { count: 0, seconds: 0 };
    totals[method] = entry;
    if (sample[1] === "sum") entry.seconds += Number(sample[3]);
    else entry.count += Number(sample[3]);
  }
  return totals;
}
