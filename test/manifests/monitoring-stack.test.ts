// The dev overlay's Prometheus and Grafana (the monitoring/ component): they run the
// repository's own config, rules and dashboards, scrape under STRICT mTLS with the
// identity the mesh admits, see what the scrape config discovers and nothing more,
// and reach exactly what they need. workloads.test.ts checks their hardening.
import { readdirSync, readFileSync } from "node:fs";
import { dirname, posix } from "node:path";
import type { IDeployment } from "kubernetes-models/apps/v1";
import type { IContainer, IPodSpec } from "kubernetes-models/v1";
import { describe, expect, test } from "vitest";
import { parse } from "yaml";
import {
  configData,
  findKubectl,
  loadOverlay,
  type Pod,
  podOf,
  reachable,
  repoRoot,
  runnables,
} from "./manifests.ts";

const kubectl = findKubectl();
const load = () => loadOverlay(kubectl as string, "dev");

type ScrapeJob = {
  job_name: string;
  scheme?: string;
  tls_config?: Record<string, string | boolean>;
  kubernetes_sd_configs?: Array<{ role: string; namespaces?: { names?: string[] } }>;
};

const monitoring = `${repoRoot}monitoring`;
const read = (path: string) => readFileSync(`${monitoring}/${path}`, "utf8");
const prometheusConfig = parse(read("prometheus/prometheus.yml")) as {
  rule_files: string[];
  scrape_configs: ScrapeJob[];
};

/** Every file of a repository folder with one extension, by name. */
function filesIn(folder: string, extension: string): Record<string, string> {
  return Object.fromEntries(
    readdirSync(`${monitoring}/${folder}`)
      .filter((name) => name.endsWith(extension))
      .map((name) => [name, read(`${folder}/${name}`)]),
  );
}

function deployment(name: string): IDeployment {
  const found = load().deployments.filter(
    (d) => d.metadata?.namespace === "monitoring" && d.metadata?.name === name,
  );
  expect(found, `Deployment monitoring/${name}`).toHaveLength(1);
  return found[0] as IDeployment;
}

function podSpec(name: string): IPodSpec {
  const spec = deployment(name).spec?.template.spec;
  if (!spec) throw new Error(`no pod spec in ${name}`);
  return spec;
}

function container(name: string): IContainer {
  const c = podSpec(name).containers.find((x) => x.name === name);
  if (!c) throw new Error(`no container ${name}`);
  return c;
}

/** Where a container mounts the named volume. */
function mountOf(c: IContainer, volume: string): string | undefined {
  return c.volumeMounts?.find((m) => m.name === volume)?.mountPath;
}

/** The ConfigMap volume of a pod whose generated ConfigMap is `name`-<hash>. */
function configMapVolume(spec: IPodSpec, name: string): string {
  const volume = spec.volumes?.find((v) =>
    new RegExp(`^${name}-[a-z0-9]{10}$`).test(v.configMap?.name ?? ""),
  );
  if (!volume) throw new Error(`no volume of ConfigMap ${name}`);
  return volume.name;
}

function arg(c: IContainer, flag: string): string | undefined {
  return c.args?.find((a) => a.startsWith(`--${flag}=`))?.slice(flag.length + 3);
}

describe.skipIf(!kubectl)("dev overlay: Prometheus and Grafana in namespace monitoring", () => {
  test("both run, each behind a Service, in a namespace that enforces the restricted standard", () => {
    const { objects, services } = load();
    const namespace = objects.find(
      (o) => o.kind === "Namespace" && o.metadata.name === "monitoring",
    );
    expect(namespace?.metadata.labels?.["pod-security.kubernetes.io/enforce"]).toBe("restricted");
    for (const [name, port] of [
      ["prometheus", 9090],
      ["grafana", 3000],
    ] as const) {
      expect(deployment(name).spec?.replicas).toBe(1);
      const service = services.find(
        (s) => s.metadata?.namespace === "monitoring" && s.metadata?.name === name,
      );
      expect(service?.spec?.selector).toEqual({ app: name });
      expect(service?.spec?.ports?.map((p) => p.port)).toEqual([port]);
    }
  });

  test("Prometheus runs prometheus.yml and every rules file of the repository, where the config looks", () => {
    const { objects } = load();
    expect(configData(objects, "prometheus-config")).toEqual({
      "prometheus.yml": read("prometheus/prometheus.yml"),
    });
    expect(configData(objects, "prometheus-rules")).toEqual(filesIn("prometheus/rules", ".yml"));

    const c = container("prometheus");
    const spec = podSpec("prometheus");
    const configFile = arg(c, "config.file") ?? "";
    const configMount = c.volumeMounts?.find((m) => m.mountPath === configFile);
    expect(configMount?.name).toBe(configMapVolume(spec, "prometheus-config"));
    expect(configMount?.subPath).toBe("prometheus.yml");
    // rule_files are relative to the config file.
    expect(prometheusConfig.rule_files).toEqual(["rules/*.yml"]);
    expect(mountOf(c, configMapVolume(spec, "prometheus-rules"))).toBe(
      posix.join(dirname(configFile), "rules"),
    );
    const data = spec.volumes?.find((v) => v.emptyDir && mountOf(c, v.name) === "/prometheus");
    expect(arg(c, "storage.tsdb.path")).toBe("/prometheus");
    expect(data).toBeDefined();
  });

  test("Grafana provisions every dashboard of the repository and both data sources", () => {
    const { objects } = load();
    expect(configData(objects, "grafana-dashboards")).toEqual(
      filesIn("grafana/dashboards", ".json"),
    );
    expect(configData(objects, "grafana-datasources")).toEqual(
      filesIn("grafana/provisioning/datasources", ".yml"),
    );
    expect(configData(objects, "grafana-dashboard-providers")).toEqual(
      filesIn("grafana/provisioning/dashboards", ".yml"),
    );
    // Only those two provisioning folders exist, so nothing under provisioning/ is left out.
    expect(readdirSync(`${monitoring}/grafana/provisioning`).sort()).toEqual([
      "dashboards",
      "datasources",
    ]);

    const c = container("grafana");
    const spec = podSpec("grafana");
    expect(mountOf(c, configMapVolume(spec, "grafana-datasources"))).toBe(
      "/etc/grafana/provisioning/datasources",
    );
    expect(mountOf(c, configMapVolume(spec, "grafana-dashboard-providers"))).toBe(
      "/etc/grafana/provisioning/dashboards",
    );
    const { providers } = parse(read("grafana/provisioning/dashboards/dashboards.yml")) as {
      providers: Array<{ options: { path: string } }>;
    };
    expect(mountOf(c, configMapVolume(spec, "grafana-dashboards"))).toBe(
      providers[0]?.options.path,
    );
  });

  test("Grafana's data source URLs are the in-cluster Prometheus and Jaeger query Services", () => {
    const { services } = load();
    const datasources = read("grafana/provisioning/datasources/datasources.yml");
    const env = Object.fromEntries((container("grafana").env ?? []).map((e) => [e.name, e.value]));
    for (const [variable, namespace, name] of [
      ["PROMETHEUS_URL", "monitoring", "prometheus"],
      ["JAEGER_URL", "observability", "jaeger-query"],
    ] as const) {
      expect(datasources).toContain(`url: \${${variable}}`);
      const url = new URL(env[variable] ?? "");
      const service = services.find(
        (s) => s.metadata?.namespace === namespace && s.metadata?.name === name,
      );
      expect(url.hostname, variable).toBe(`${name}.${namespace}.svc.cluster.local`);
      expect(service?.spec?.ports?.map((p) => p.port)).toContain(Number(url.port));
    }
  });

  test("Prometheus scrapes 9464 with the Istio certificate of the principal istio/security.yaml admits", () => {
    const { authorizations, serviceAccounts } = load();
    const spec = podSpec("prometheus");
    const identity = `cluster.local/ns/monitoring/sa/${spec.serviceAccountName}`;
    const scrape = authorizations.find((a) => a.metadata?.name === "allow-metrics-scrape");
    const principals = (scrape?.spec?.rules ?? []).flatMap((r) =>
      (r.from ?? []).flatMap((f) => f.source?.principals ?? []),
    );
    expect(principals).toEqual([identity]);
    expect(
      serviceAccounts.some(
        (s) => s.metadata.namespace === "monitoring" && s.metadata.name === spec.serviceAccountName,
      ),
    ).toBe(true);

    // Istio's setup: a sidecar that captures no traffic and writes its certificates
    // into a volume Prometheus mounts where tls_config reads them.
    const pod = deployment("prometheus").spec?.template.metadata;
    expect(pod?.labels?.["sidecar.istio.io/inject"]).toBe("true");
    const annotations = pod?.annotations ?? {};
    expect(annotations["traffic.sidecar.istio.io/includeInboundPorts"]).toBe("");
    expect(annotations["traffic.sidecar.istio.io/includeOutboundIPRanges"]).toBe("");
    const proxy = parse(annotations["proxy.istio.io/config"] ?? "") as {
      proxyMetadata?: { OUTPUT_CERTS?: string };
    };
    const output = proxy.proxyMetadata?.OUTPUT_CERTS;
    const sidecarMounts = JSON.parse(
      annotations["sidecar.istio.io/userVolumeMount"] ?? "[]",
    ) as Array<{ name: string; mountPath: string }>;
    const certs = sidecarMounts.find((m) => m.mountPath === output)?.name ?? "";
    expect(spec.volumes?.find((v) => v.name === certs)?.emptyDir?.medium).toBe("Memory");

    const job = prometheusConfig.scrape_configs.find((j) => j.job_name === "coinmesh-pods");
    expect(job?.scheme).toBe("https");
    const folder = mountOf(container("prometheus"), certs);
    for (const key of ["ca_file", "cert_file", "key_file"]) {
      expect(dirname(String(job?.tls_config?.[key])), key).toBe(folder);
    }
    // Workload certificates carry a SPIFFE identity, not the scraped pod's IP.
    expect(job?.tls_config?.insecure_skip_verify).toBe(true);
  });

  test("Prometheus may read exactly what its Kubernetes discovery asks for, and change nothing", () => {
    const { roles, roleBindings, objects } = load();
    const resources: Record<string, string> = { pod: "pods", service: "services" };
    const bound = roleBindings.filter((b) =>
      (b.subjects ?? []).some(
        (s) =>
          s.kind === "ServiceAccount" && s.namespace === "monitoring" && s.name === "prometheus",
      ),
    );
    const granted = bound.flatMap((b) => {
      const role = roles.find(
        (r) =>
          r.metadata?.namespace === b.metadata?.namespace && r.metadata?.name === b.roleRef.name,
      );
      expect(b.roleRef.kind, b.metadata?.name).toBe("Role");
      return (role?.rules ?? []).map((rule) => ({ namespace: b.metadata?.namespace, rule }));
    });
    const needed = prometheusConfig.scrape_configs.flatMap((job) =>
      (job.kubernetes_sd_configs ?? []).flatMap((sd) => {
        const names = sd.namespaces?.names;
        expect(names, `${job.job_name}: discovery limited to namespaces`).toBeDefined();
        return (names ?? []).map((namespace) => ({ namespace, resource: resources[sd.role] }));
      }),
    );
    expect(needed.length).toBeGreaterThan(0);
    for (const { namespace, resource } of needed) {
      expect(
        granted.some(
          ({ rule, namespace: where }) =>
            where === namespace &&
            rule.apiGroups?.includes("") &&
            rule.resources?.includes(resource ?? "") &&
            ["list", "watch"].every((verb) => rule.verbs.includes(verb)),
        ),
        `list and watch ${resource} in ${namespace}`,
      ).toBe(true);
    }
    const grantedResources = granted.flatMap(({ namespace, rule }) =>
      (rule.resources ?? []).map((r) => `${namespace}/${r}`),
    );
    expect(new Set(grantedResources)).toEqual(
      new Set(needed.map((n) => `${n.namespace}/${n.resource}`)),
    );
    for (const { rule } of granted) expect(rule.verbs).toEqual(["get", "list", "watch"]);
    expect(objects.some((o) => o.kind === "ClusterRoleBinding")).toBe(false);
  });

  test("the pods probe their HTTP health endpoints", () => {
    const probes = (c: IContainer) =>
      [c.startupProbe, c.readinessProbe, c.livenessProbe].map((p) => p?.httpGet?.path);
    expect(probes(container("prometheus"))).toEqual(["/-/ready", "/-/ready", "/-/healthy"]);
    expect(probes(container("grafana"))).toEqual(["/api/health", "/api/health", "/api/health"]);
    for (const name of ["prometheus", "grafana"]) {
      const c = container(name);
      for (const p of [c.startupProbe, c.readinessProbe, c.livenessProbe]) {
        expect(
          c.ports?.map((x) => x.name),
          name,
        ).toContain(p?.httpGet?.port);
      }
    }
  });

  test("network policies: Prometheus reaches the metrics ports, Grafana Prometheus and Jaeger, nothing else", () => {
    const { objects, policies } = load();
    const pod = (namespace: string, app: string) => podOf(objects, namespace, app);
    const prometheus = pod("monitoring", "prometheus");
    const grafana = pod("monitoring", "grafana");
    const istiod: Pod = { namespace: "istio-system", labels: { app: "istiod" } };
    expect(
      policies.some(
        (p) =>
          p.metadata.namespace === "monitoring" &&
          p.metadata.name === "default-deny" &&
          Object.keys(p.spec?.podSelector ?? { x: 1 }).length === 0 &&
          !p.spec?.ingress &&
          !p.spec?.egress,
      ),
    ).toBe(true);
    for (const app of runnables) {
      const target = pod("coinmesh", app);
      // The app's metrics and the sidecar's Envoy stats (http-envoy-prom).
      expect(reachable(objects, prometheus, target, 9464), `prometheus -> ${app}:9464`).toBe(true);
      expect(reachable(objects, prometheus, target, 15090), `prometheus -> ${app}:15090`).toBe(
        true,
      );
      const serving = app === "gateway" ? 8080 : 50051;
      expect(reachable(objects, prometheus, target, serving), `prometheus -> ${app}`).toBe(false);
      expect(reachable(objects, grafana, target, 9464), `grafana -> ${app}`).toBe(false);
      expect(reachable(objects, target, prometheus, 9090), `${app} -> prometheus`).toBe(false);
    }
    expect(reachable(objects, prometheus, pod("coinmesh", "postgres"), 5432)).toBe(false);
    expect(reachable(objects, prometheus, istiod, 15012), "sidecar certificates").toBe(true);
    expect(reachable(objects, grafana, prometheus, 9090)).toBe(true);
    expect(reachable(objects, grafana, pod("observability", "jaeger"), 16686)).toBe(true);
    expect(reachable(objects, grafana, istiod, 15012)).toBe(false);
  });
});
