// Cross-checks in the spirit of `istioctl analyze`: routing points at hosts,
// subsets and labels that exist; weights add up; retries only where the contracts
// say an RPC has no side effects; authorization allows exactly the real callers;
// mesh settings agree with the apps' configuration.
import { readdirSync, readFileSync } from "node:fs";
import type { IVirtualService } from "@kubernetes-models/istio/networking.istio.io/v1";
import type { IService } from "kubernetes-models/v1";
import { describe, expect, test } from "vitest";
import { parse } from "yaml";
import type { RuleFile } from "../monitoring/monitoring-files.ts";
import {
  backends,
  configData,
  findKubectl,
  loadOverlay,
  type Manifest,
  overlays,
  repoRoot,
  runnables,
} from "./manifests.ts";

const kubectl = findKubectl();

// Callers outside the namespace, by the identity Istio gives them.
const externalPrincipals = new Set([
  "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
  "cluster.local/ns/monitoring/sa/prometheus",
]);

// The architecture's call graph: who may call each runnable's serving port.
const callers: Record<string, string[]> = {
  gateway: ["istio-system/istio-ingressgateway-service-account"],
  user: ["coinmesh/gateway", "coinmesh/order"],
  order: ["coinmesh/gateway"],
  rate: ["coinmesh/gateway", "coinmesh/order"],
};

type Rpc = { path: string; readOnly: boolean; serverStream: boolean };

/** The RPCs of a service's proto package, from the .proto sources. */
function rpcs(service: string): Rpc[] {
  const dir = `${repoRoot}proto/coinmesh/${service}/v1`;
  return readdirSync(dir)
    .filter((f) => f.endsWith(".proto"))
    .flatMap((file) => {
      const text = readFileSync(`${dir}/${file}`, "utf8");
      const pkg = /^package\s+([\w.]+);/m.exec(text)?.[1];
      const found: Rpc[] = [];
      for (const block of text.matchAll(/service\s+(\w+)\s*\{([\s\S]*?)\n\}/g)) {
        const body = block[2] ?? "";
        const rpcPattern =
          /rpc\s+(\w+)\s*\(\s*(?:stream\s+)?[\w.]+\s*\)\s*returns\s*\(\s*(stream\s+)?[\w.]+\s*\)\s*(;|\{[^}]*\})/g;
        for (const rpc of body.matchAll(rpcPattern)) {
          found.push({
            path: `/${pkg}.${block[1]}/${rpc[1]}`,
            readOnly: /idempotency_level\s*=\s*NO_SIDE_EFFECTS/.test(rpc[3] ?? ""),
            serverStream: rpc[2] !== undefined,
          });
        }
      }
      return found;
    });
}

// A stream's duration is its lifetime, not latency: the mesh percentiles skip streams the
// way the apps' percentiles are read with grpc_type="unary".
test("the mesh's latency rules leave out exactly the server-streaming RPCs", () => {
  const file = `${repoRoot}monitoring/prometheus/rules/istio.yml`;
  const { groups } = parse(readFileSync(file, "utf8")) as RuleFile;
  const buckets = groups
    .flatMap((g) => g.rules)
    .find(
      (r) =>
        r.record ===
        "destination_app_version_rpc:istio_request_duration_milliseconds_bucket:rate5m",
    );
  const left = /rpc!~"([^"]+)"/.exec(buckets?.expr ?? "")?.[1]?.split("|") ?? [];
  const streams = backends.flatMap((b) => rpcs(b)).filter((r) => r.serverStream);
  expect(streams.length).toBeGreaterThan(0);
  expect(left.sort()).toEqual(streams.map((r) => r.path).sort());
});

const load = (overlay: (typeof overlays)[number]) => loadOverlay(kubectl as string, overlay);

const fqdn = (s: Manifest) => `${s.metadata.name}.${s.metadata.namespace}.svc.cluster.local`;

type HttpRoute = NonNullable<NonNullable<IVirtualService["spec"]>["http"]>[number];

describe.skipIf(!kubectl).each(overlays)("%s mesh", (overlay) => {
  test("every VirtualService destination is an existing Service, port and subset", () => {
    const { virtualServices, destinationRules, services } = load(overlay);
    expect(virtualServices.map((v) => v.metadata.name).sort()).toEqual([...runnables].sort());
    for (const vs of virtualServices) {
      for (const route of vs.spec?.http ?? []) {
        for (const { destination } of route.route ?? []) {
          const where = `${vs.metadata.name}/${route.name}`;
          const service = services.find((s) => fqdn(s) === destination.host);
          expect(service, `${where}: host ${destination.host}`).toBeDefined();
          if (destination.port?.number !== undefined) {
            expect(service?.spec?.ports?.map((p) => p.port)).toContain(destination.port.number);
          }
          const rule = destinationRules.find((d) => d.spec?.host === destination.host);
          expect(
            rule?.spec?.subsets?.map((s) => s.name),
            where,
          ).toContain(destination.subset);
        }
      }
    }
  });

  test("DestinationRules: stable/canary subsets match Deployment labels, mTLS, limits", () => {
    const { destinationRules, deployments, services } = load(overlay);
    for (const app of runnables) {
      const service = services.find((s) => s.metadata.name === app) as IService & Manifest;
      const rule = destinationRules.find((d) => d.spec?.host === fqdn(service));
      expect(rule, app).toBeDefined();
      expect(rule?.spec?.subsets?.map((s) => s.name)).toEqual(["stable", "canary"]);
      for (const subset of rule?.spec?.subsets ?? []) {
        const pods = deployments.filter((d) => {
          const labels = d.spec?.template.metadata?.labels ?? {};
          const wanted = { ...service.spec?.selector, ...subset.labels };
          return Object.entries(wanted).every(([k, v]) => labels[k] === v);
        });
        expect(
          pods.map((d) => d.metadata?.name),
          `${app}/${subset.name}`,
        ).toEqual([subset.name === "stable" ? app : `${app}-canary`]);
      }
      const policy = rule?.spec?.trafficPolicy;
      expect(policy?.tls?.mode).toBe("ISTIO_MUTUAL");
      expect(policy?.connectionPool?.http?.http2MaxRequests).toBeGreaterThan(0);
      expect(policy?.outlierDetection?.consecutive5xxErrors).toBeGreaterThan(0);
      expect(policy?.outlierDetection?.maxEjectionPercent).toBeLessThan(100);
    }
    // HTTP/1.1 and h2c on one gateway port: each request keeps its protocol.
    const gateway = destinationRules.find((d) => d.metadata.name === "gateway");
    expect(gateway?.spec?.trafficPolicy?.connectionPool?.http?.useClientProtocol).toBe(true);
  });

  test("weights: every weighted route sums to 100, the same split in all of a service's routes", () => {
    const { virtualServices } = load(overlay);
    for (const vs of virtualServices) {
      const splits = (vs.spec?.http ?? [])
        .filter((r) => (r.route ?? []).length > 1)
        .map((r) => (r.route ?? []).map((d) => `${d.destination.subset}=${d.weight}`).join(","));
      expect(splits.length, vs.metadata.name).toBeGreaterThan(0);
      expect(new Set(splits).size, `${vs.metadata.name}: ${splits.join(" | ")}`).toBe(1);
      for (const route of vs.spec?.http ?? []) {
        const weights = (route.route ?? []).map((d) => d.weight ?? 100);
        if (weights.length > 1) expect(weights.reduce((a, b) => a + b, 0)).toBe(100);
      }
      // Until shifted, the canary takes no weighted traffic.
      expect(splits[0]).toBe("stable=100,canary=0");
    }
  });

  test("x-canary: always pins to the canary, first, in every VirtualService", () => {
    const { virtualServices } = load(overlay);
    for (const vs of virtualServices) {
      const first = vs.spec?.http?.[0];
      expect(first?.match).toEqual([{ headers: { "x-canary": { exact: "always" } } }]);
      expect(first?.route?.map((r) => r.destination.subset)).toEqual(["canary"]);
    }
  });

  test("retries only on the RPCs the contracts mark NO_SIDE_EFFECTS; timeouts except on streams", () => {
    const { virtualServices } = load(overlay);
    for (const app of backends) {
      const vs = virtualServices.find((v) => v.metadata.name === app);
      const routes = vs?.spec?.http ?? [];
      const all = rpcs(app);
      expect(all.length).toBeGreaterThan(0);
      const routeFor = (path: string): HttpRoute | undefined =>
        routes.find(
          (r) => !r.match || r.match.some((m) => m.uri?.exact === path && m.headers === undefined),
        );
      for (const rpc of all) {
        const route = routeFor(rpc.path);
        const attempts = route?.retries?.attempts;
        expect(attempts, `${rpc.path}: retries must be explicit`).toBeDefined();
        if (rpc.readOnly) expect(attempts, rpc.path).toBeGreaterThan(0);
        else expect(attempts, `${rpc.path} is a write`).toBe(0);
        if (rpc.serverStream) expect(route?.timeout, rpc.path).toBeUndefined();
        else expect(route?.timeout, rpc.path).toBeDefined();
      }
      for (const route of routes) {
        expect(route.retries, `${app}/${route.name}`).toBeDefined();
        if ((route.retries?.attempts ?? 0) === 0) continue;
        // A retrying route matches only read paths, never everything.
        expect(route.match, `${app}/${route.name}`).toBeDefined();
        for (const m of route.match ?? []) {
          const rpc = all.find((r) => r.path === m.uri?.exact);
          expect(rpc?.readOnly, `${app}/${route.name} retries ${m.uri?.exact}`).toBe(true);
        }
      }
    }
    const gateway = virtualServices.find((v) => v.metadata.name === "gateway");
    for (const route of gateway?.spec?.http ?? []) {
      expect(route.retries?.attempts, `edge route ${route.name}`).toBe(0);
    }
  });

  test("mesh timeouts leave room for the gateway's own deadline", () => {
    const { virtualServices, objects } = load(overlay);
    const maxMs = Number(configData(objects, "gateway-config").MAX_TIMEOUT_MS);
    const seconds = (t: string | undefined) => Number(/^(\d+)s$/.exec(t ?? "")?.[1]);
    for (const vs of virtualServices) {
      for (const route of vs.spec?.http ?? []) {
        if (route.timeout === undefined) continue;
        expect(
          seconds(route.timeout) * 1000,
          `${vs.metadata.name}/${route.name}`,
        ).toBeGreaterThanOrEqual(maxMs);
      }
    }
  });

  test("ports are named for Istio protocol selection", () => {
    const { services } = load(overlay);
    for (const s of services) {
      for (const port of s.spec?.ports ?? []) {
        const protocol = port.appProtocol ?? port.name?.split("-")[0];
        expect(
          ["grpc", "http", "http2", "https", "tcp", "tls"],
          `${s.metadata.name}:${port.name}`,
        ).toContain(protocol);
      }
    }
    const gateway = services.find((s) => s.metadata.name === "gateway");
    expect(gateway?.spec?.ports?.find((p) => p.port === 8080)?.name).toBe("http");
  });

  test("the ingress: TLS from a Secret reference, bound to the gateway's VirtualService", () => {
    const { gateways, virtualServices } = load(overlay);
    expect(gateways).toHaveLength(1);
    const ingress = gateways[0];
    const https = ingress?.spec?.servers?.find((s) => s.port?.protocol === "HTTPS");
    expect(https?.tls?.mode).toBe("SIMPLE");
    expect(https?.tls?.credentialName).toBe("coinmesh-tls");
    const bound = virtualServices.filter((v) =>
      v.spec?.gateways?.includes(ingress?.metadata.name ?? ""),
    );
    expect(bound.map((v) => v.metadata.name)).toEqual(["gateway"]);
  });

  test("STRICT mTLS and allow-nothing by default", () => {
    const { peers, authorizations } = load(overlay);
    expect(peers.map((p) => [p.metadata.namespace, p.spec?.mtls?.mode])).toEqual([
      ["coinmesh", "STRICT"],
    ]);
    const allowNothing = authorizations.filter(
      (a) => a.metadata.namespace === "coinmesh" && Object.keys(a.spec ?? {}).length === 0,
    );
    expect(allowNothing).toHaveLength(1);
  });

  test("authorization: every principal exists, and each runnable admits exactly its callers", () => {
    const { authorizations, objects, deployments } = load(overlay);
    const accounts = new Set(
      objects
        .filter((o) => o.kind === "ServiceAccount")
        .map((o) => `cluster.local/ns/${o.metadata.namespace}/sa/${o.metadata.name}`),
    );
    const allows = authorizations.filter((a) => a.spec?.action === "ALLOW");
    for (const policy of allows) {
      for (const rule of policy.spec?.rules ?? []) {
        for (const from of rule.from ?? []) {
          for (const principal of from.source?.principals ?? []) {
            expect(
              accounts.has(principal) || externalPrincipals.has(principal),
              `${policy.metadata.name}: ${principal}`,
            ).toBe(true);
          }
        }
      }
      expect(
        deployments.some((d) =>
          Object.entries(policy.spec?.selector?.matchLabels ?? {}).every(
            ([k, v]) => d.spec?.template.metadata?.labels?.[k] === v,
          ),
        ),
        `${policy.metadata.name} selects a workload`,
      ).toBe(true);
    }
    for (const app of runnables) {
      const port = app === "gateway" ? "8080" : "50051";
      const admitted = allows
        .filter((p) => p.spec?.selector?.matchLabels?.app === app)
        .flatMap((p) => p.spec?.rules ?? [])
        .filter((r) => r.to?.some((t) => t.operation?.ports?.includes(port)))
        .flatMap((r) => (r.from ?? []).flatMap((f) => f.source?.principals ?? []))
        .map((p) => p.replace(/^cluster\.local\/ns\/([^/]+)\/sa\//, "$1/"))
        .sort();
      expect(admitted, app).toEqual([...(callers[app] ?? [])].sort());
    }
  });

  test("JWT at the ingress agrees with the gateway's configuration", () => {
    const { requestAuths, objects, serviceEntries } = load(overlay);
    const config = configData(objects, "gateway-config");
    if (overlay === "dev") {
      expect(requestAuths).toEqual([]);
      expect(config.JWT_JWKS_URL).toBeUndefined();
      return;
    }
    expect(requestAuths).toHaveLength(1);
    const rule = requestAuths[0]?.spec?.jwtRules?.[0];
    expect(rule?.issuer).toBe(config.JWT_ISSUER);
    expect(rule?.audiences).toEqual([config.JWT_AUDIENCE]);
    expect(rule?.jwksUri).toBe(config.JWT_JWKS_URL);
    expect(rule?.forwardOriginalToken).toBe(true);
    expect(requestAuths[0]?.spec?.selector?.matchLabels).toEqual({ istio: "ingressgateway" });
    const issuer = serviceEntries.find((s) => s.metadata.name === "jwt-issuer");
    expect(issuer?.spec?.hosts).toEqual([new URL(config.JWT_JWKS_URL ?? "").hostname]);
  });

  test("egress: REGISTRY_ONLY, and the rates upstream host is the one rate is configured with", () => {
    const { sidecars, serviceEntries, objects } = load(overlay);
    expect(sidecars.map((s) => s.spec?.outboundTrafficPolicy?.mode)).toEqual(["REGISTRY_ONLY"]);
    const upstream = new URL(configData(objects, "rate-config").RATES_UPSTREAM_URL ?? "");
    const entry = serviceEntries.find((s) => s.metadata.name === "rates-upstream");
    expect(entry?.spec?.hosts).toEqual([upstream.hostname]);
    expect(entry?.spec?.location).toBe("MESH_EXTERNAL");
    expect(entry?.spec?.ports?.map((p) => p.number)).toEqual([Number(upstream.port || 443)]);
  });

  test("sidecar trace sampling equals the apps' OTEL_TRACES_SAMPLER_ARG", () => {
    const { telemetries, objects } = load(overlay);
    const ratio = Number(configData(objects, "coinmesh-config").OTEL_TRACES_SAMPLER_ARG);
    expect(ratio).toBeGreaterThan(0);
    expect(telemetries).toHaveLength(1);
    const tracing = telemetries[0]?.spec?.tracing?.[0];
    expect(tracing?.randomSamplingPercentage).toBeCloseTo(ratio * 100, 6);
    expect(telemetries[0]?.spec?.accessLogging?.[0]?.providers?.[0]?.name).toBe("envoy");
    const expected = { dev: 100, staging: 10, prod: 1 }[overlay];
    expect(tracing?.randomSamplingPercentage).toBe(expected);
  });

  test("Istio's request count and duration name exactly the protos' RPCs in `rpc`, all else 'other'", () => {
    const { telemetries } = load(overlay);
    const overrides = telemetries[0]?.spec?.metrics?.[0]?.overrides ?? [];
    expect(overrides.map((o) => o.match?.metric)).toEqual(["REQUEST_COUNT", "REQUEST_DURATION"]);
    const tags = overrides.map((o) => o.tagOverrides?.rpc);
    for (const tag of tags) expect(tag?.operation).toBe("UPSERT");
    const [count, duration] = tags.map((t) => t?.value?.replace(/\s+/g, " ").trim());
    expect(duration).toBe(count);
    const list = /^request\.url_path in \[([^\]]*)\] \? request\.url_path : 'other'$/.exec(
      count ?? "",
    )?.[1];
    expect(list, count).toBeDefined();
    // Nothing but quoted paths and commas between the brackets.
    expect(list?.replace(/'[^']*'/g, "").replace(/[\s,]/g, "")).toBe("");
    const named = [...(list ?? "").matchAll(/'([^']*)'/g)].map((m) => m[1]);
    const paths = backends.flatMap((b) => rpcs(b)).map((r) => r.path);
    expect(paths.length).toBeGreaterThan(10);
    expect(named).toHaveLength(new Set(named).size);
    expect([...named].sort()).toEqual([...paths].sort());
  });
});
