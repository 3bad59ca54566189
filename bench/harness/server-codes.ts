/**
 * The server's own count of finished calls per status code for one method, from its Prometheus
 * `grpc_server_handled_total`: the ground truth behind h2load's "HTTP 2xx", which a gRPC error
 * also is.
 */
export async function handledByCode(
  metricsPort: number,
  method: string,
): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
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
