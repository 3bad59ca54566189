// `npm start`: the whole platform on loopback, each runnable a child process with prefixed logs.
// Waits until every one answers SERVING, prints how to call it, and stops them all on Ctrl-C.
// Embedded databases live under `.data/` of the folder it is started from.
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { createServiceClient } from "@coinmesh/lib/grpc-client";
import {
  Health,
  HealthCheckResponse_ServingStatus,
} from "@coinmesh/proto/grpc/health/v1/health_pb";
import { DEV_JWT_SECRET } from "../gateway/src/token.ts";

interface Runnable {
  name: string;
  entry: string;
  port: number;
  color: number;
  env?: Record<string, string>;
}

const runnables: Runnable[] = [
  { name: "user", entry: "services/user/src/main.ts", port: 50051, color: 36 },
  { name: "rate", entry: "services/rate/src/main.ts", port: 50053, color: 33 },
  { name: "order", entry: "services/order/src/main.ts", port: 50052, color: 35 },
  {
    name: "gateway",
    entry: "gateway/src/main.ts",
    port: 8080,
    color: 32,
    // Tokens from `npm run token` verify against this development secret.
    env: { JWT_SECRET: process.env.JWT_SECRET ?? DEV_JWT_SECRET },
  },
];

const root = fileURLToPath(new URL("..", import.meta.url));
const children = new Map<string, ChildProcess>();
let stopping = false;

function prefixLines(name: string, color: number, stream: NodeJS.ReadableStream) {
  const tag = `\x1b[${color}m${name.padEnd(7)}\x1b[0m│ `;
  createInterface({ input: stream }).on("line", (line) => process.stdout.write(`${tag}${line}\n`));
}

function start(r: Runnable) {
  const args = ["--import", `${root}lib/src/telemetry-register.ts`, `${root}${r.entry}`];
  const child = spawn(process.execPath, args, {
    env: { LOG_FORMAT: "pretty", ...process.env, ...r.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  prefixLines(r.name, r.color, child.stdout);
  prefixLines(r.name, r.color, child.stderr);
  child.once("exit", (code, signal) => {
    children.delete(r.name);
    if (!stopping) {
      console.error(`\n${r.name} exited (${signal ?? code}); stopping the platform`);
      void stopAll(1);
    }
  });
  children.set(r.name, child);
}

async function waitServing(r: Runnable, timeoutMs = 60_000) {
  const { client, close } = createServiceClient(Health, `127.0.0.1:${r.port}`);
  const deadline = Date.now() + timeoutMs;
  try {
    while (Date.now() < deadline && !stopping) {
      try {
        const res = await client.check({}, { timeoutMs: 1_000 });
        if (res.status === HealthCheckResponse_ServingStatus.SERVING) return;
      } catch {
        // not listening yet
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    throw new Error(`${r.name} did not become SERVING on port ${r.port} within ${timeoutMs} ms`);
  } finally {
    close();
  }
}

async function stopAll(code: number) {
  if (stopping) return;
  stopping = true;
  const exits = [...children].map(
    ([name, child]) =>
      new Promise<boolean>((resolve) =>
        child.once("exit", (exitCode, signal) => {
          if (exitCode !== 0) console.error(`${name} did not stop cleanly (${signal ?? exitCode})`);
          resolve(exitCode === 0);
        }),
      ),
  );
  for (const child of children.values()) child.kill("SIGTERM");
  const clean = (await Promise.all(exits)).every(Boolean);
  process.exit(clean ? code : 1);
}

process.on("SIGINT", () => void stopAll(0));
process.on("SIGTERM", () => void stopAll(0));

for (const r of runnables) start(r);
try {
  await Promise.all(runnables.map((r) => waitServing(r)));
} catch (err) {
  console.error((err as Error).message);
  await stopAll(1);
}

console.log(`
coinmesh is running:
${runnables.map((r) => `  ${r.name.padEnd(8)} 127.0.0.1:${r.port}`).join("\n")}

Try it through the gateway (README.md walks the whole journey):
  curl -s http://127.0.0.1:8080/coinmesh.rate.v1.RateService/GetRate \\
    -H 'content-type: application/json' -d '{"base":"BTC","quote":"USD"}'
  npx buf curl -d '{"email":"ada@example.com","display_name":"Ada"}' \\
    http://127.0.0.1:8080/coinmesh.user.v1.UserService/CreateUser
  npm run --silent token -- --sub <user id>     # a development token for that user

Ctrl-C stops everything.
`);
