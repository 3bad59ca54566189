import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

export interface Rule {
  record?: string;
  alert?: string;
  expr: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface RuleFile {
  groups: { name: string; rules: Rule[] }[];
}

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { type: string; uid: string };
  targets?: { expr?: string }[];
}

interface Variable {
  name: string;
  type: string;
  query?: string | { query: string };
}

export interface Dashboard {
  uid: string;
  title: string;
  schemaVersion: number;
  templating: { list: Variable[] };
  panels: Panel[];
}

/** The metrics the processes emit (the contract in lib/src/metrics.ts and the services). */
const APP_METRICS = new Set([
  "grpc_server_started_total",
  "grpc_server_handled_total",
  "grpc_client_started_total",
  "grpc_client_handled_total",
  "coinmesh_orders_total",
  "coinmesh_ledger_operations_total",
  "coinmesh_rate_upstream_requests_total",
  "coinmesh_rate_cache_requests_total",
  "coinmesh_rate_staleness_seconds",
  "coinmesh_rate_watch_streams",
  "coinmesh_gateway_auth_failures_total",
  "coinmesh_gateway_rate_limited_total",
  "process_resident_memory_bytes",
  "process_cpu_seconds_total",
  "nodejs_eventloop_lag_p99_seconds",
  "nodejs_heap_size_used_bytes",
  // Written by Prometheus itself: one per target, one per active alert.
  "up",
  "ALERTS",
]);
const HISTOGRAMS = [
  "grpc_server_handling_seconds",
  "grpc_client_handling_seconds",
  "nodejs_gc_duration_seconds",
  "istio_request_duration_milliseconds",
];
const ISTIO_METRICS = new Set(["istio_requests_total"]);
for (const h of HISTOGRAMS) {
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    (h.startsWith("istio_") ? ISTIO_METRICS : APP_METRICS).add(h + suffix);
  }
}

/**
 * Queries over Istio's series, raw or recorded. No mesh runs locally, so live.test.ts
 * skips them and promtool.test.ts fills them from made-up sidecar series instead.
 */
export const MESH_QUERY = /\bistio_/;

export function isKnownMetric(name: string, recorded: ReadonlySet<string>): boolean {
  return APP_METRICS.has(name) || ISTIO_METRICS.has(name) || recorded.has(name);
}

const KEYWORDS = new Set(["and", "or", "unless", "bool", "offset", "inf", "nan"]);

/**
 * The metric names a PromQL expression selects: identifiers that are not functions,
 * keywords, label names (inside braces or grouping clauses), strings or numbers.
 */
export function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ")
    .replace(/\$\{?[A-Za-z_]\w*\}?/g, " ");
  const names: string[] = [];
  for (const match of stripped.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const before = stripped[match.index - 1] ?? " ";
    const after = stripped.slice(match.index + match[0].length).trimStart();
    if (/[0-9.]/.test(before)) continue; // 1e3, 5m
    if (after.startsWith("(")) continue; // a function call
    if (KEYWORDS.has(match[0].toLowerCase())) continue;
    names.push(match[0]);
  }
  return names;
}

/** The PromQL in an alert's `{{ query (printf "...") }}` annotation templates. */
export function annotationQueries(rule: Rule): string[] {
  return Object.values(rule.annotations ?? {}).flatMap((text) =>
    [...text.matchAll(/query \(printf "((?:[^"\\]|\\.)*)"/g)].map((m) =>
      (m[1] ?? "").replace(/\\"/g, '"').replace(/%q/g, '"x"'),
    ),
  );
}

/** A Grafana query with its variables filled in, so that promtool can parse it. */
export function toPromql(expr: string): string {
  return expr
    .replace(/\$__(?:rate_interval|interval|range)\b/g, "5m")
    .replace(/\$\{?[A-Za-z_]\w*\}?/g, "x");
}

/** Panel queries plus the series selectors of `label_values(...)` variables. */
export function dashboardExprs(dashboard: Dashboard): { where: string; expr: string }[] {
  const panels = dashboard.panels.flatMap((p) =>
    (p.targets ?? []).map((t) => ({ where: p.title, expr: t.expr ?? "" })),
  );
  const variables = dashboard.templating.list.flatMap((v) => {
    if (v.type !== "query") return [];
    const query = typeof v.query === "string" ? v.query : (v.query?.query ?? "");
    const selector = /^label_values\((.+),\s*\w+\)$/.exec(query)?.[1];
    return [{ where: `$${v.name}`, expr: selector ?? query }];
  });
  return [...panels, ...variables];
}

export function readDashboards(dir: string): { file: string; dashboard: Dashboard }[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith(".json"))
    .map((file) => ({
      file,
      dashboard: JSON.parse(readFileSync(join(dir, file), "utf8")) as Dashboard,
    }));
}

/** GitHub-style anchors of a Markdown file's headings. */
export function runbookAnchors(markdown: string): string[] {
  return [...markdown.matchAll(/^#+ (.+)$/gm)].map((m) =>
    (m[1] ?? "")
      .trim()
      .toLowerCase()
      .replace(/[^a-z0-9 _-]/g, "")
      .replace(/ /g, "-"),
  );
}
