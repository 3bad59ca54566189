import { createServer, type Server } from "node:http";
import type { DescMethod } from "@bufbuild/protobuf";
import { trace } from "@opentelemetry/api";
import { Counter, collectDefaultMetrics, Histogram, type Metric, Registry } from "prom-client";
import type { CallObserver } from "./grpc-service.ts";
import type { Logger } from "./log.ts";
import { codeName } from "./status.ts";

const LATENCY_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

function grpcType(method: DescMethod): string {
  return method.methodKind === "server_streaming" ? "server_stream" : method.methodKind;
}

/**
 * The grpc-ecosystem metric family (`grpc_<side>_started_total`, `_handled_total`,
 * `_handling_seconds`) that existing dashboards know, labelled with the canonical status name.
 */
function createGrpcObserver(registry: Registry, side: "server" | "client"): CallObserver {
  const labelNames = ["grpc_service", "grpc_method", "grpc_type"] as const;
  type Labels = Record<(typeof labelNames)[number], string>;
  const started = new Counter({
    name: `grpc_${side}_started_total`,
    help: `RPCs started on the ${side}.`,
    labelNames,
    registers: [registry],
  });
  const handled = new Counter({
    name: `grpc_${side}_handled_total`,
    help: `RPCs completed on the ${side}, by gRPC status code.`,
    labelNames: [...labelNames, "grpc_code"],
    registers: [registry],
  });
  const seconds = new Histogram({
    name: `grpc_${side}_handling_seconds`,
    help: `Time to complete an RPC on the ${side}, in seconds.`,
    labelNames,
    buckets: LATENCY_BUCKETS,
    registers: [registry],
    enableExemplars: true,
  });
  // Label objects are cached per method: this runs on every call.
  const labels = new WeakMap<DescMethod, Labels>();
  const labelsOf = (method: DescMethod) => {
    let value = labels.get(method);
    if (!value) {
      value = {
        grpc_service: method.parent.typeName,
        grpc_method: method.name,
        grpc_type: grpcType(method),
      };
      labels.set(method, value);
    }
    return value;
  };
  // Bound children skip prom-client's per-call label hashing on the hot path.
  const startedChildren = new WeakMap<DescMethod, ReturnType<typeof started.labels>>();
  const handledChildren = new WeakMap<DescMethod, Map<number, ReturnType<typeof handled.labels>>>();
  const handledChild = (method: DescMethod, code: number) => {
    let byCode = handledChildren.get(method);
    if (!byCode) {
      byCode = new Map();
      handledChildren.set(method, byCode);
    }
    let child = byCode.get(code);
    if (!child) {
      child = handled.labels({ ...labelsOf(method), grpc_code: codeName(code) });
      byCode.set(code, child);
    }
    return child;
  };
  return {
    started(method) {
      let child = startedChildren.get(method);
      if (!child) {
        child = started.labels(labelsOf(method));
        startedChildren.set(method, child);
      }
      child.inc();
    },
    handled(method, code, elapsed) {
      const l = labelsOf(method);
      handledChild(method, code).inc();
      // A sampled trace becomes the bucket's exemplar: Grafana links the latency to the trace.
      // (With exemplars enabled, prom-client accepts only the object form of observe.)
      const span = trace.getActiveSpan()?.spanContext();
      const sampled = span !== undefined && (span.traceFlags & 1) === 1;
      seconds.observe({
        labels: l,
        value: elapsed,
        // prom-client types exemplar labels as metric labels; exemplars carry their own.
        ...(sampled && { exemplarLabels: { trace_id: span.traceId } as unknown as Labels }),
      });
    },
  };
}

export interface Metrics {
  registry: Registry;
  server: CallObserver;
  client: CallObserver;
}

/** A registry of the given format; prom-client's typings lack the constructor argument. */
function registryFor(contentType: string): Registry {
  const registry = new Registry();
  registry.setContentType(contentType as typeof Registry.PROMETHEUS_CONTENT_TYPE);
  return registry;
}

export function createMetrics(): Metrics {
  // Exemplar-carrying histograms may only be registered on an OpenMetrics registry; what a
  // scrape gets is negotiated per request (renderMetrics).
  const registry = registryFor(Registry.OPENMETRICS_CONTENT_TYPE);
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    server: createGrpcObserver(registry, "server"),
    client: createGrpcObserver(registry, "client"),
  };
}

/**
 * True when the scraper prefers OpenMetrics, the format that carries exemplars (Prometheus
 * asks for it first); anything else (curl, older scrapers) gets Prometheus text.
 */
export function prefersOpenMetrics(accept: string | undefined): boolean {
  let openMetrics = 0;
  let text = 0;
  for (const range of (accept ?? "").toLowerCase().split(",")) {
    const [type, ...params] = range.split(";").map((part) => part.trim());
    const q = Number(params.find((p) => p.startsWith("q="))?.slice(2) ?? "1");
    const weight = Number.isFinite(q) ? q : 0;
    if (type === "application/openmetrics-text") openMetrics = Math.max(openMetrics, weight);
    else if (type === "text/plain" || type === "text/*" || type === "*/*") {
      text = Math.max(text, weight);
    }
  }
  return openMetrics > 0 && openMetrics >= text;
}

/** prom-client's renderer of one metric family, in the format of the registry it belongs to. */
interface FamilyRenderer {
  getMetricsAsString(family: Pick<Metric, "get">): Promise<string>;
}
const openMetricsRenderer = registryFor(
  Registry.OPENMETRICS_CONTENT_TYPE,
) as unknown as FamilyRenderer;
const textRenderer = registryFor(Registry.PROMETHEUS_CONTENT_TYPE) as unknown as FamilyRenderer;

/** A counter as a format names it: OpenMetrics appends `_total` itself, text needs it there. */
function counterNamed(counter: Metric, name: (defined: string) => string): Pick<Metric, "get"> {
  return {
    get: async () => {
      const family = await counter.get();
      return { ...family, name: name(family.name) };
    },
  };
}

/**
 * The registry's metrics as OpenMetrics (with exemplars) or as Prometheus text (without).
 * `registry.metrics()` cannot do both: it renders in one format, and its OpenMetrics pass
 * renames counters in place (`x_total` → `x`), which would break every later text scrape.
 */
export async function renderMetrics(
  registry: Registry,
  format: "openmetrics" | "text",
): Promise<{ contentType: string; body: string }> {
  const openMetrics = format === "openmetrics";
  const renderer = openMetrics ? openMetricsRenderer : textRenderer;
  const counterName = openMetrics
    ? (name: string) => name.replace(/_total$/, "")
    : (name: string) => (name.endsWith("_total") ? name : `${name}_total`);
  const families = await Promise.all(
    (registry.getMetricsAsArray() as unknown as Metric[]).map((metric) =>
      renderer.getMetricsAsString(
        metric instanceof Counter ? counterNamed(metric, counterName) : metric,
      ),
    ),
  );
  return openMetrics
    ? { contentType: Registry.OPENMETRICS_CONTENT_TYPE, body: `${families.join("\n")}\n# EOF\n` }
    : { contentType: Registry.PROMETHEUS_CONTENT_TYPE, body: `${families.join("\n\n")}\n` };
}

/**
 * Serves `/metrics` on its own port (0 picks a free one): OpenMetrics with exemplars to a
 * scraper that asks for it, Prometheus text otherwise.
 */
export async function startMetricsServer(
  registry: Registry,
  host: string,
  port: number,
  log: Logger,
): Promise<{ port: number; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    if (req.url !== "/metrics") {
      res.writeHead(404).end("not found; try /metrics\n");
      return;
    }
    const format = prefersOpenMetrics(req.headers.accept) ? "openmetrics" : "text";
    renderMetrics(registry, format).then(
      ({ contentType, body }) =>
        res.writeHead(200, { "content-type": contentType, vary: "Accept" }).end(body),
      (err: unknown) => {
        log.error({ err }, "metrics collection failed");
        res.writeHead(500).end();
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, resolve);
  });
  const address = server.address();
  return {
    port: typeof address === "object" && address ? address.port : port,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
