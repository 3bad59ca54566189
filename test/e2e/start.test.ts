import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { inCI } from "@coinmesh/lib/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Decimal } from "../../services/order/src/amounts.ts";

// `npm start` as a newcomer runs it: nothing configured (embedded Postgres, in-process cache),
// no reachable rates upstream, the fixed local ports. Then the README's buf curl journey, buf curl
// with reflection straight at the services, and Ctrl-C.

const root = fileURLToPath(new URL("../..", import.meta.url));
const buf = join(root, "node_modules/.bin/buf");
const PORTS = [8080, 50051, 50052, 50053, 9460, 9461, 9462, 9463];
const run = promisify(execFile);

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer()
      .once("error", () => resolve(false))
      .listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

const busy = (await Promise.all(PORTS.map(async (p) => ((await portFree(p)) ? [] : [p])))).flat();
if (busy.length > 0 && inCI) throw new Error(`npm start's ports are taken: ${busy.join(", ")}`);

/** Every JSON document buf curl printed (pretty-printed, one after another). */
function documents(stdout: string): Record<string, unknown>[] {
  return stdout
    .trim()
    .split(/\n(?=\{)/)
    .map((doc) => JSON.parse(doc));
}

/** buf curl over gRPC from a folder outside the buf workspace, so the schema comes by reflection. */
async function grpcCurl(cwd: string, port: number, method: string, body: unknown) {
  const { stdout } = await run(
    buf,
    [
      "curl",
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "-d",
      JSON.stringify(body),
      `http://127.0.0.1:${port}/${method}`,
    ],
    { cwd, timeout: 20_000 },
  );
  return JSON.parse(stdout);
}

describe.skipIf(busy.length > 0)("npm start", () => {
  let cwd: string;
  let platform: ChildProcess;
  let output = "";
  let exited: Promise<number | null>;

  beforeAll(async () => {
    cwd = mkdtempSync(join(tmpdir(), "coinmesh-start-"));
    const env: Record<string, string | undefined> = { ...process.env, LOG_FORMAT: "json" };
    for (const name of ["DATABASE_URL", "REDIS_URL", "JWT_SECRET", "OTEL_EXPORTER_OTLP_ENDPOINT"])
      delete env[name];
    // Nothing answers there: the rates upstream is as unreachable as it is offline.
    env.RATES_UPSTREAM_URL = "http://127.0.0.1:9";
    // Its own process group, so that Ctrl-C can reach all of it as a terminal's does.
    platform = spawn(process.execPath, [join(root, "scripts/start.ts")], {
      cwd,
      env,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    platform.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    platform.stderr?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    exited = new Promise((resolve) => platform.once("exit", (code) => resolve(code)));
    const deadline = Date.now() + 90_000;
    while (!output.includes("coinmesh is running")) {
      if (platform.exitCode !== null || Date.now() > deadline)
        throw new Error(`npm start did not come up:\n${output}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }, 100_000);

  afterAll(async () => {
    if (platform?.exitCode === null && platform.pid) process.kill(-platform.pid, "SIGKILL");
    if (cwd) rmSync(cwd, { recursive: true, force: true });
  });

  it("prints how to call it, with every runnable on its port", () => {
    for (const line of [
      "user     127.0.0.1:50051",
      "order    127.0.0.1:50052",
      "gateway  127.0.0.1:8080",
    ])
      expect(output).toContain(line);
    expect(output).toContain("npx buf curl");
  });

  it("keeps the embedded databases under .data/ of the folder it started in", () => {
    expect(existsSync(join(cwd, ".data/user/pg"))).toBe(true);
    expect(existsSync(join(cwd, ".data/order/pg"))).toBe(true);
  });

  it("answers GetRate offline from the bundled snapshot, clearly marked", async () => {
    const res = await grpcCurl(cwd, 50053, "coinmesh.rate.v1.RateService/GetRate", {
      base: "BTC",
      quote: "USD",
    });
    expect(res.rate).toMatchObject({
      base: "BTC",
      quote: "USD",
      source: "RATE_SOURCE_SNAPSHOT",
      stale: true,
    });
    expect(Number(res.rate.price)).toBeGreaterThan(0);
  });

  it("serves UserService by reflection: create, get, list, update, and health", async () => {
    const email = `grace-${randomUUID()}@example.com`;
    const created = await grpcCurl(cwd, 50051, "coinmesh.user.v1.UserService/CreateUser", {
      email,
      display_name: "Grace",
    });
    const id = created.user.id as string;
    const got = await grpcCurl(cwd, 50051, "coinmesh.user.v1.UserService/GetUser", { id });
    expect(got.user).toMatchObject({ id, email, displayName: "Grace" });
    const listed = await grpcCurl(cwd, 50051, "coinmesh.user.v1.UserService/ListUsers", {
      page_size: 500,
    });
    expect(listed.users.map((u: { id: string }) => u.id)).toContain(id);
    const updated = await grpcCurl(cwd, 50051, "coinmesh.user.v1.UserService/UpdateUser", {
      user: { id, display_name: "Grace Hopper" },
      update_mask: "displayName",
    });
    expect(updated.user).toMatchObject({ id, email, displayName: "Grace Hopper" });
    for (const port of [50051, 50052, 50053, 8080]) {
      const health = await grpcCurl(cwd, port, "grpc.health.v1.Health/Check", {});
      expect(health).toEqual({ status: "SERVING" });
    }
  });

  it("walks the README's buf curl journey through the gateway", async () => {
    const readme = readFileSync(join(root, "README.md"), "utf8");
    const section = readme.slice(readme.indexOf("### The journey with buf curl"));
    const script = /```sh\n([\s\S]*?)```/.exec(section)?.[1] ?? "";
    expect(script).toContain("PlaceOrder");
    const email = `ada-${randomUUID()}@example.com`;
    const { stdout } = await run("sh", ["-ec", script.replaceAll("ada@example.com", email)], {
      cwd: root,
      env: { ...process.env, JWT_SECRET: "" },
      timeout: 60_000,
    });
    const [deposit, order, orders, balances] = documents(stdout) as {
      transaction?: { kind: string };
      order?: { status: string; rateSource: string; notional: string };
      orders?: unknown[];
      balances?: { currency: string; amount: string }[];
    }[];
    expect(deposit?.transaction?.kind).toBe("TRANSACTION_KIND_DEPOSIT");
    expect(order?.order).toMatchObject({
      status: "ORDER_STATUS_FILLED",
      rateSource: "RATE_SOURCE_SNAPSHOT",
    });
    expect(orders?.orders).toHaveLength(1);
    const usd = new Decimal(1000).minus(order?.order?.notional ?? "").toString();
    expect(balances?.balances).toEqual([
      { currency: "BTC", amount: "0.001" },
      { currency: "USD", amount: usd },
    ]);
  });

  // Last: it stops the platform.
  it("stops everything cleanly on Ctrl-C", async () => {
    process.kill(-(platform.pid as number), "SIGINT");
    expect(await exited).toBe(0);
    for (const name of ["user", "order", "rate", "gateway"])
      expect(output).not.toMatch(new RegExp(`${name} exited \\(`));
    expect(await Promise.all(PORTS.map(portFree))).toEqual(PORTS.map(() => true));
  }, 30_000);
});
