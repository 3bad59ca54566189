import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createServiceClient } from "@coinmesh/lib/grpc-client";
import { spawnRunnable } from "@coinmesh/lib/process-testing";
import { freePort, inCI, TEST_REDIS_URL } from "@coinmesh/lib/testing";
import { AccountService } from "@coinmesh/proto/order/v1/account_pb";
import { OrderService, Side } from "@coinmesh/proto/order/v1/order_pb";
import { RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { UserService } from "@coinmesh/proto/user/v1/user_pb";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { mintToken } from "../../gateway/src/token.ts";
import { type RunningPrometheus, startPrometheus } from "../../scripts/observe.ts";
import { type Platform, startPlatform, TEST_JWT_SECRET } from "../support/platform.ts";
import { dashboardExprs, MESH_QUERY, type RuleFile, readDashboards } from "./monitoring-files.ts";

const root = resolve(import.meta.dirname, "../..");
const prometheusDir = join(root, "monitoring/prometheus");
const havePrometheus = spawnSync("prometheus", ["--version"]).status === 0;
if (!havePrometheus && inCI) throw new Error("CI needs prometheus: apt-get install -y prometheus");

// Istio's rules read istio_requests_total, which only a mesh produces; promtool's unit
// tests cover them (tests/istio.test.yml).
const MESH_ONLY_RULE_FILES = ["istio.yml"];
// Panels over those mesh-only series (promtool.test.ts evaluates each of them over made-up
// sidecar series instead), and the firing-alerts table, which is rightly empty while the
// platform is healthy (its query is still parsed by promtool in promtool.test.ts).
const FIRING_ALERTS_PANEL = /^sum by \(alertname, severity, app, version\) \(ALERTS\{/;
const expectedEmpty = (expr: string) => MESH_QUERY.test(expr) || FIRING_ALERTS_PANEL.test(expr);

let platform: Platform;
let prometheus: RunningPrometheus;
let scratch: string;
let stopCanary: (() => Promise<void>) | undefined;

async function query(promql: string): Promise<unknown[]> {
  const url = `${prometheus.url}/api/v1/query?query=${encodeURIComponent(promql)}`;
  const body = (await (await fetch(url)).json()) as {
    status: string;
    data: { result: unknown[] };
    error?: string;
  };
  if (body.status !== "success") throw new Error(`${promql}: ${body.error}`);
  return body.data.result;
}

/** Public and authenticated calls through the gateway, one without a token, and a burst past the anonymous limit. */
async function throughGateway(userId: string) {
  const transport = createConnectTransport({ baseUrl: platform.gateway ?? "", httpVersion: "1.1" });
  const token = await mintToken({ sub: userId, secret: TEST_JWT_SECRET });
  const auth = { headers: { authorization: `Bearer ${token}` } };
  const rates = createClient(RateService, transport);
  const accounts = createClient(AccountService, transport);
  const swallow = () => undefined;
  await rates.getRate({ base: "BTC", quote: "EUR" });
  await accounts.getBalances({ userId }, auth);
  await accounts.getBalances({ userId }).catch(swallow);
  await Promise.all(Array.from({ length: 12 }, () => rates.listCurrencies({}).catch(swallow)));
}

/** A short burst of realistic traffic, with some refusals so error series exist too. */
async function load(rateCanary: string) {
  const users = createServiceClient(UserService, platform.user);
  const accounts = createServiceClient(AccountService, platform.order);
  const orders = createServiceClient(OrderService, platform.order);
  const rates = createServiceClient(RateService, platform.rate);
  const canaryRates = createServiceClient(RateService, rateCanary);
  const swallow = () => undefined;
  try {
    for (let round = 0; round < 8; round++) {
      const { user } = await users.client.createUser({
        email: `m-${randomUUID()}@example.com`,
        displayName: "M",
      });
      const userId = user?.id ?? "";
      await users.client.getUser({ id: userId });
      await users.client.getUser({ id: "not-a-uuid" }).catch(swallow);
      await users.client.listUsers({ pageSize: 5 });
      await accounts.client.deposit({
        userId,
        currency: "USD",
        amount: "1000",
        idempotencyKey: randomUUID(),
      });
      await accounts.client
        .withdraw({ userId, currency: "USD", amount: "10000", idempotencyKey: randomUUID() })
        .catch(swallow);
      await orders.client.placeOrder({
        userId,
        side: Side.BUY,
        asset: "BTC",
        quoteCurrency: "USD",
        quantity: "0.001",
        idempotencyKey: randomUUID(),
      });
      await orders.client.listOrders({ userId });
      await accounts.client.getBalances({ userId });
      for (const client of [rates.client, canaryRates.client]) {
        await client.getRate({ base: "BTC", quote: "USD" });
        await client.getRate({ base: "BTC", quote: "NOPE" }).catch(swallow);
        await client.getRates({ base: "ETH", quotes: ["USD", "EUR"] });
      }
      await throughGateway(userId);
      const watch = new AbortController();
      const stream = rates.client.watchRates(
        { base: "BTC", quotes: ["USD"] },
        { signal: watch.signal },
      );
      for await (const _ of stream) break;
      await new Promise((r) => setTimeout(r, 250));
    }
  } finally {
    for (const c of [users, accounts, orders, rates, canaryRates]) c.close();
  }
}

beforeAll(async () => {
  if (!havePrometheus) return;
  // A small anonymous allowance, so the burst in the load is partly refused.
  platform = await startPlatform({
    gateway: true,
    env: { RATE_LIMIT_PER_SECOND: "5", RATE_LIMIT_BURST: "10" },
  });
  // A second rate replica labelled canary, so the canary rules and dashboard have both sides.
  const canary = spawnRunnable("services/rate/src/main.ts", {
    PORT: "0",
    METRICS_PORT: "0",
    RATES_UPSTREAM_URL: platform.upstream.url,
    REDIS_URL: TEST_REDIS_URL,
    RATES_REDIS_KEY: `coinmesh:test:${randomUUID()}`,
    RATES_ALLOW_SNAPSHOT: "false",
  });
  stopCanary = async () => {
    canary.child.kill("SIGTERM");
    await canary.exited;
  };
  const canaryReady = await canary.waitForLog((l) => l.msg === "rate service SERVING");

  scratch = mkdtempSync(join(tmpdir(), "coinmesh-prometheus-"));
  const config = parse(readFileSync(join(prometheusDir, "prometheus-local.yml"), "utf8"));
  config.rule_files = config.rule_files.map((glob: string) => join(prometheusDir, glob));
  config.scrape_configs[0].static_configs = [
    ...Object.entries(platform.metricsPorts).map(([app, port]) => ({
      targets: [`127.0.0.1:${port}`],
      labels: { app, version: "stable" },
    })),
    {
      targets: [`127.0.0.1:${canaryReady.metricsPort}`],
      labels: { app: "rate", version: "canary" },
    },
  ];
  const configFile = join(scratch, "prometheus.yml");
  writeFileSync(configFile, stringify(config));
  prometheus = await startPrometheus({
    listen: `127.0.0.1:${await freePort()}`,
    dataDir: join(scratch, "data"),
    binary: "prometheus",
    logLevel: "error",
    configFile,
  });
  // Prometheus hands targets to its scrapers a few seconds after it is ready: load only once
  // every process has been scraped, or the whole burst could fall before the first sample.
  const targets = Object.keys(platform.metricsPorts).length + 1;
  const scraped = Date.now() + 30_000;
  while ((await query("up == 1")).length < targets) {
    if (Date.now() > scraped) throw new Error("prometheus did not scrape every process");
    await new Promise((r) => setTimeout(r, 250));
  }
  await load(`127.0.0.1:${canaryReady.port}`);
  // Rules evaluate every second; give them a few rounds over the loaded series.
  const deadline = Date.now() + 30_000;
  while ((await query("app_version_grpc_method:grpc_server_handled:rate5m")).length === 0) {
    if (Date.now() > deadline) throw new Error("recording rules produced nothing");
    await new Promise((r) => setTimeout(r, 500));
  }
  await new Promise((r) => setTimeout(r, 3_000));
}, 180_000);

afterAll(async () => {
  await prometheus?.stop();
  await stopCanary?.();
  await platform?.stop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe.skipIf(!havePrometheus)("a real Prometheus over the running platform", () => {
  it("scrapes every process", async () => {
    const up = (await query("up")) as { metric: { app: string }; value: [number, string] }[];
    expect(up.length).toBe(Object.keys(platform.metricsPorts).length + 1);
    for (const target of up) expect(target.value[1], target.metric.app).toBe("1");
  });

  const ruleFiles = () =>
    (["grpc.yml", "slo.yml", "canary.yml", "platform.yml", ...MESH_ONLY_RULE_FILES] as const).map(
      (file) => ({
        file,
        rules: parse(readFileSync(join(prometheusDir, "rules", file), "utf8")) as RuleFile,
      }),
    );

  it("has data for every recording rule outside the mesh-only ones", async () => {
    const empty: string[] = [];
    for (const { file, rules } of ruleFiles()) {
      if (MESH_ONLY_RULE_FILES.includes(file)) continue;
      for (const group of rules.groups) {
        for (const rule of group.rules) {
          if (!rule.record) continue;
          if ((await query(rule.record)).length === 0) empty.push(rule.record);
        }
      }
    }
    // Prometheus' own word on rules that failed to evaluate, for a readable failure.
    const api = (await (await fetch(`${prometheus.url}/api/v1/rules?type=record`)).json()) as {
      data: { groups: { rules: { name: string; health: string; lastError?: string }[] }[] };
    };
    const unhealthy = api.data.groups
      .flatMap((g) => g.rules)
      .filter((r) => r.health !== "ok")
      .map((r) => `${r.name}: ${r.health} ${r.lastError ?? ""}`);
    expect(unhealthy).toEqual([]);
    expect(empty).toEqual([]);
  });

  it("has data for every dashboard panel query", async () => {
    const empty: string[] = [];
    const apps = Object.keys(platform.metricsPorts);
    for (const { file, dashboard } of readDashboards(join(root, "monitoring/grafana/dashboards"))) {
      for (const { where, expr } of dashboardExprs(dashboard)) {
        if (expectedEmpty(expr)) continue;
        const filled = expr
          .replace(/\$__(?:rate_interval|interval|range)\b/g, "1m")
          .replaceAll("$version", ".*")
          .replaceAll("$grpc_method", ".*");
        // A panel has data when some choice of the app variable shows something.
        const candidates = filled.includes("$app")
          ? apps.map((app) => filled.replaceAll("$app", app))
          : [filled];
        let found = false;
        for (const candidate of candidates) {
          if ((await query(candidate)).length > 0) {
            found = true;
            break;
          }
        }
        if (!found) empty.push(`${file} › ${where}: ${expr}`);
      }
    }
    expect(empty).toEqual([]);
  });
});
