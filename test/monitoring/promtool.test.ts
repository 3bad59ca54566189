import { execFile, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import {
  annotationQueries,
  dashboardExprs,
  isKnownMetric,
  MESH_QUERY,
  metricNames,
  type RuleFile,
  readDashboards,
  runbookAnchors,
  toPromql,
} from "./monitoring-files.ts";

const root = resolve(import.meta.dirname, "../..");
const prometheusDir = join(root, "monitoring/prometheus");
const rulesDir = join(prometheusDir, "rules");
const testsDir = join(prometheusDir, "tests");
const grafanaDir = join(root, "monitoring/grafana");

const ruleFiles = readdirSync(rulesDir)
  .filter((f) => f.endsWith(".yml"))
  .map((f) => join(rulesDir, f));
const testFiles = readdirSync(testsDir)
  .filter((f) => f.endsWith(".test.yml"))
  .map((f) => join(testsDir, f));
const rules = ruleFiles.flatMap((file) =>
  (parse(readFileSync(file, "utf8")) as RuleFile).groups.flatMap((g) =>
    g.rules.map((rule) => ({ ...rule, file })),
  ),
);
const recorded = new Set(rules.flatMap((r) => (r.record ? [r.record] : [])));
const alerts = rules.filter((r) => r.alert !== undefined);
const dashboards = readDashboards(join(grafanaDir, "dashboards"));

// Panels pick the Prometheus data source through the dashboard variable `datasource`.
// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana variable syntax
const GRAFANA_DATASOURCE_VARIABLE = "${datasource}";

const hasPromtool = spawnSync("promtool", ["--version"]).error === undefined;

interface Run {
  code: number;
  output: string;
}

function promtool(args: string[]): Promise<Run> {
  return new Promise((done) => {
    execFile("promtool", args, { cwd: prometheusDir }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
      done({ code, output: `${stdout}${stderr}` });
    });
  });
}

const scratch = mkdtempSync(join(tmpdir(), "coinmesh-promtool-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe.concurrent("promtool", () => {
  if (!hasPromtool) {
    if (process.env.CI) {
      it("is installed (apt-get install prometheus)", () => {
        expect.fail("promtool is not on PATH; CI must install Debian's prometheus package");
      });
    } else {
      it.skip("skipped: promtool is not on PATH (apt-get install -y prometheus)", () => {});
    }
    return;
  }

  it("accepts the local config", async () => {
    const run = await promtool(["check", "config", "prometheus-local.yml"]);
    expect(run.output).toContain("SUCCESS");
    expect(run.code, run.output).toBe(0);
  });

  it("accepts the cluster config", async () => {
    // The Istio workload certificates exist only inside the Prometheus pod; promtool checks
    // that TLS files exist, so point them at stand-ins.
    const config = parse(readFileSync(join(prometheusDir, "prometheus.yml"), "utf8"));
    config.rule_files = config.rule_files.map((glob: string) => join(prometheusDir, glob));
    for (const job of config.scrape_configs) {
      for (const key of ["ca_file", "cert_file", "key_file"]) {
        if (job.tls_config?.[key]) {
          job.tls_config[key] = join(scratch, basename(job.tls_config[key]));
          writeFileSync(job.tls_config[key], "");
        }
      }
    }
    const copy = join(scratch, "prometheus-cluster.yml");
    writeFileSync(copy, stringify(config));
    let run = await promtool(["check", "config", copy]);
    // Debian builds Prometheus without Kubernetes discovery. Then check everything else
    // with each kubernetes_sd_configs swapped for an empty static list (the discovery
    // blocks themselves are checked by the next test).
    if (run.output.includes("field kubernetes_sd_configs not found")) {
      for (const job of config.scrape_configs) {
        delete job.kubernetes_sd_configs;
        job.static_configs = [];
      }
      writeFileSync(copy, stringify(config));
      run = await promtool(["check", "config", copy]);
    }
    expect(run.output).toContain("SUCCESS");
    expect(run.code, run.output).toBe(0);
  });

  it("scrapes app metrics over Istio mutual TLS (PeerAuthentication is STRICT)", () => {
    const config = parse(readFileSync(join(prometheusDir, "prometheus.yml"), "utf8"));
    const pods = config.scrape_configs.find(
      (j: { job_name: string }) => j.job_name === "coinmesh-pods",
    );
    expect(pods.scheme).toBe("https");
    expect(pods.tls_config).toMatchObject({
      ca_file: "/etc/prom-certs/root-cert.pem",
      cert_file: "/etc/prom-certs/cert-chain.pem",
      key_file: "/etc/prom-certs/key.pem",
    });
  });

  it("accepts every rules file", async () => {
    const run = await promtool(["check", "rules", ...ruleFiles]);
    expect(run.code, run.output).toBe(0);
    expect(run.output.match(/SUCCESS/g)).toHaveLength(ruleFiles.length);
  });

  it.each(testFiles.map((file) => [basename(file), file]))(
    "passes the rule tests in %s",
    async (_, file) => {
      const run = await promtool(["test", "rules", file]);
      expect(run.code, run.output).toBe(0);
      expect(run.output).toContain("SUCCESS");
    },
  );

  it("parses every dashboard query and every alert's annotation query as PromQL", async () => {
    const exprs = [
      ...dashboards.flatMap(({ dashboard }) => dashboardExprs(dashboard).map((e) => e.expr)),
      ...alerts.flatMap((a) => annotationQueries(a)),
    ];
    expect(exprs.length).toBeGreaterThan(40);
    const file = join(scratch, "dashboard-queries.yml");
    const records = exprs.map((expr, i) => ({ record: `query_check_${i}`, expr: toPromql(expr) }));
    writeFileSync(file, stringify({ groups: [{ name: "queries", rules: records }] }));
    const run = await promtool(["check", "rules", file]);
    expect(run.code, run.output).toBe(0);
  });
});

/**
 * A mesh's worth of sidecar series for app rate, both versions: a unary RPC and a stream,
 * health checks, and OK, UNAVAILABLE and sidecar-failed (no status) calls.
 */
function meshSeries(): { series: string; values: string }[] {
  const out: { series: string; values: string }[] = [];
  for (const version of ["stable", "canary"]) {
    for (const rpc of [
      "/coinmesh.rate.v1.RateService/GetRate",
      "/coinmesh.rate.v1.RateService/WatchRates",
      "other",
    ]) {
      const labels = `reporter="destination",request_protocol="grpc",destination_app="rate",destination_version="${version}",rpc="${rpc}"`;
      for (const [status, perMinute] of [
        ["0", 54],
        ["14", 3],
        ["", 3],
      ] as const) {
        out.push({
          series: `istio_requests_total{${labels},grpc_response_status="${status}"}`,
          values: `0+${perMinute}x10`,
        });
      }
      for (const [le, perMinute] of [
        ["5", 30],
        ["25", 54],
        ["+Inf", 60],
      ] as const) {
        out.push({
          series: `istio_request_duration_milliseconds_bucket{${labels},le="${le}"}`,
          values: `0+${perMinute}x10`,
        });
      }
    }
  }
  return out;
}

// One real choice per dashboard variable, as a user would pick it (values of the apps'
// own labels, which the mesh panels must filter on).
const MESH_VARIABLES: Record<string, string> = {
  $__rate_interval: "5m",
  $app: "rate",
  $grpc_method: "GetRate",
  $version: "canary",
};

describe.skipIf(!hasPromtool)("mesh panels", () => {
  // live.test.ts has no mesh to read from: here every panel query over Istio's series is
  // evaluated with the recording rules over made-up sidecar series and must show a number.
  it("every dashboard query over Istio's series returns data", async () => {
    const queries = dashboards.flatMap(({ file, dashboard }) =>
      dashboardExprs(dashboard)
        .filter(({ expr }) => MESH_QUERY.test(expr))
        .map(({ where, expr }) => ({
          name: `${file} › ${where}`,
          expr: expr.replace(/\$\w+/g, (v) => MESH_VARIABLES[v] ?? v),
        })),
    );
    expect(queries.length).toBeGreaterThan(10);
    for (const { name, expr } of queries) expect(expr, name).not.toContain("$");
    const file = join(scratch, "mesh-panels.test.yml");
    const input_series = meshSeries();
    const tests = queries.map(({ name, expr }) => ({
      name,
      interval: "1m",
      input_series,
      // group() is 1 when the query has at least one sample that is a number (not NaN).
      promql_expr_test: [
        {
          expr: `group((${expr}) >= -Inf)`,
          eval_time: "10m",
          exp_samples: [{ labels: "{}", value: 1 }],
        },
      ],
    }));
    writeFileSync(
      file,
      stringify({ rule_files: [join(rulesDir, "istio.yml")], evaluation_interval: "1m", tests }),
    );
    const run = await promtool(["test", "rules", file]);
    expect(run.code, run.output).toBe(0);
  });
});

describe("rules", () => {
  const tests = testFiles.map((file) => parse(readFileSync(file, "utf8")) as TestFile);

  it("every recording rule is checked by a promql_expr_test", () => {
    const checked = new Set(
      tests.flatMap((t) =>
        t.tests.flatMap((c) => (c.promql_expr_test ?? []).flatMap((e) => metricNames(e.expr))),
      ),
    );
    expect(recorded.size).toBeGreaterThan(30);
    expect([...recorded].filter((name) => !checked.has(name))).toEqual([]);
  });

  it("every alert has a test case in which it fires", () => {
    const fired = new Set(
      tests.flatMap((t) =>
        t.tests.flatMap((c) =>
          (c.alert_rule_test ?? []).flatMap((a) => (a.exp_alerts?.length ? [a.alertname] : [])),
        ),
      ),
    );
    expect(alerts.length).toBeGreaterThan(8);
    expect(alerts.map((a) => a.alert).filter((name) => !fired.has(name ?? ""))).toEqual([]);
  });

  it("every alert has a severity, a summary, a description and an existing runbook", () => {
    const anchors = runbookAnchors(readFileSync(join(root, "monitoring/runbooks.md"), "utf8"));
    for (const alert of alerts) {
      expect(["page", "ticket"], alert.alert).toContain(alert.labels?.severity);
      expect(alert.annotations?.summary, alert.alert).toMatch(/\{\{ \$labels\.app \}\}/);
      expect(alert.annotations?.description?.length, alert.alert).toBeGreaterThan(80);
      const [path, anchor] = (alert.annotations?.runbook ?? "").split("#");
      expect(path, alert.alert).toBe("monitoring/runbooks.md");
      expect(anchors, alert.alert).toContain(anchor);
      expect(anchor, alert.alert).toBe(alert.alert?.toLowerCase());
    }
  });

  it("reads only the apps' metrics, Istio's and recorded series", () => {
    const unknown = rules.flatMap((r) => [
      ...metricNames(r.expr).filter((n) => !isKnownMetric(n, recorded)),
      ...annotationQueries(r).flatMap((q) =>
        metricNames(q).filter((n) => !isKnownMetric(n, recorded)),
      ),
    ]);
    expect(unknown).toEqual([]);
  });
});

describe("scrape configs", () => {
  const cluster = parse(readFileSync(join(prometheusDir, "prometheus.yml"), "utf8"));
  const local = parse(readFileSync(join(prometheusDir, "prometheus-local.yml"), "utf8"));

  it("the cluster config discovers pods in namespace coinmesh by named port", () => {
    const byJob = new Map<string, ScrapeConfig>(
      cluster.scrape_configs.map((job: ScrapeConfig) => [job.job_name, job]),
    );
    const expectedPort = { "coinmesh-pods": "http-metrics", "coinmesh-envoy": "http-envoy-prom" };
    for (const [name, port] of Object.entries(expectedPort)) {
      const job = byJob.get(name);
      expect(job?.kubernetes_sd_configs, name).toEqual([
        { role: "pod", namespaces: { names: ["coinmesh"] } },
      ]);
      const relabel = job?.relabel_configs ?? [];
      expect(relabel[0], name).toEqual({
        source_labels: ["__meta_kubernetes_pod_container_port_name"],
        regex: port,
        action: "keep",
      });
      const targets = Object.fromEntries(
        relabel.filter((r) => r.target_label).map((r) => [r.target_label, r.source_labels]),
      );
      expect(targets, name).toMatchObject({
        app: ["__meta_kubernetes_pod_label_app"],
        version: ["__meta_kubernetes_pod_label_version"],
        namespace: ["__meta_kubernetes_namespace"],
        pod: ["__meta_kubernetes_pod_name"],
      });
    }
  });

  it("the local config scrapes the four processes every second as version local", () => {
    expect(local.global.scrape_interval).toBe("1s");
    expect(local.global.evaluation_interval).toBe("1s");
    const targets = local.scrape_configs.flatMap((job: ScrapeConfig) =>
      (job.static_configs ?? []).flatMap((sc) => sc.targets.map((t) => ({ t, ...sc.labels }))),
    );
    expect(targets).toEqual([
      { t: "127.0.0.1:9460", app: "gateway", version: "local" },
      { t: "127.0.0.1:9461", app: "user", version: "local" },
      { t: "127.0.0.1:9462", app: "order", version: "local" },
      { t: "127.0.0.1:9463", app: "rate", version: "local" },
    ]);
    expect(local.rule_files).toEqual(cluster.rule_files);
  });
});

describe("grafana", () => {
  it("has the four dashboards, each with a unique uid and the Prometheus variable", () => {
    expect(dashboards.map((d) => d.file).sort()).toEqual([
      "canary.json",
      "ledger-and-orders.json",
      "platform-overview.json",
      "service-detail.json",
    ]);
    const uids = dashboards.map((d) => d.dashboard.uid);
    expect(new Set(uids).size).toBe(uids.length);
    for (const { file, dashboard } of dashboards) {
      expect(dashboard.uid, file).toMatch(/^[a-z0-9-]{1,40}$/);
      expect(dashboard.schemaVersion, file).toBeGreaterThanOrEqual(39);
      const ds = dashboard.templating.list.find((v) => v.type === "datasource");
      expect(ds, file).toMatchObject({ name: "datasource", query: "prometheus" });
    }
  });

  it("every panel has a query, and its ids and grid positions are sane", () => {
    for (const { file, dashboard } of dashboards) {
      const ids = dashboard.panels.map((p) => p.id);
      expect(new Set(ids).size, file).toBe(ids.length);
      for (const panel of dashboard.panels) {
        const { x, w } = panel.gridPos;
        expect(x + w, `${file} ${panel.title}`).toBeLessThanOrEqual(24);
        if (panel.type === "row") continue;
        expect(panel.datasource?.uid, `${file} ${panel.title}`).toBe(GRAFANA_DATASOURCE_VARIABLE);
        expect(panel.targets?.length, `${file} ${panel.title}`).toBeGreaterThan(0);
        for (const target of panel.targets ?? []) {
          expect(target.expr?.trim(), `${file} ${panel.title}`).toBeTruthy();
        }
      }
    }
  });

  it("dashboards query only known metrics and use every template variable they define", () => {
    for (const { file, dashboard } of dashboards) {
      const exprs = dashboardExprs(dashboard);
      const unknown = exprs.flatMap(({ expr }) =>
        metricNames(expr).filter((n) => !isKnownMetric(n, recorded)),
      );
      expect(unknown, file).toEqual([]);
      const text = exprs.map((e) => e.expr).join("\n");
      for (const v of dashboard.templating.list.filter((v) => v.type === "query")) {
        expect(text, `${file} $${v.name}`).toContain(`$${v.name}`);
      }
    }
  });

  it("the main views are built on the recording rules", () => {
    for (const { file, dashboard } of dashboards.filter(
      (d) => d.file !== "ledger-and-orders.json",
    )) {
      const names = dashboardExprs(dashboard).flatMap((e) => metricNames(e.expr));
      expect(names.filter((n) => recorded.has(n)).length, file).toBeGreaterThan(names.length / 2);
    }
  });

  it("provisions Prometheus with exemplar links to the Jaeger data source", () => {
    const { datasources } = parse(
      readFileSync(join(grafanaDir, "provisioning/datasources/datasources.yml"), "utf8"),
    ) as { datasources: Datasource[] };
    const prometheus = datasources.find((d) => d.type === "prometheus");
    const jaeger = datasources.find((d) => d.type === "jaeger");
    expect(prometheus?.isDefault).toBe(true);
    expect(jaeger?.uid).toBeTruthy();
    expect(prometheus?.jsonData?.exemplarTraceIdDestinations).toEqual([
      { name: "trace_id", datasourceUid: jaeger?.uid },
    ]);
    const { providers } = parse(
      readFileSync(join(grafanaDir, "provisioning/dashboards/dashboards.yml"), "utf8"),
    ) as { providers: { type: string; options: { path: string } }[] };
    expect(providers).toHaveLength(1);
    expect(providers[0]).toMatchObject({ type: "file" });
    expect(existsSync(join(grafanaDir, "dashboards"))).toBe(true);
  });
});

interface TestFile {
  tests: {
    promql_expr_test?: { expr: string }[];
    alert_rule_test?: { alertname: string; exp_alerts?: unknown[] }[];
  }[];
}

interface ScrapeConfig {
  job_name: string;
  kubernetes_sd_configs?: unknown[];
  relabel_configs?: { source_labels?: string[]; target_label?: string; regex?: string }[];
  static_configs?: { targets: string[]; labels?: Record<string, string> }[];
}

interface Datasource {
  uid: string;
  type: string;
  isDefault?: boolean;
  jsonData?: { exemplarTraceIdDestinations?: unknown };
}
