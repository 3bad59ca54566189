// The image recipe: pinned Node matching the project's, production dependencies
// only, a non-root numeric user the pods agree with, no secrets in the context.
import { readFileSync } from "node:fs";
import { expect, test } from "vitest";
import { repoRoot } from "./manifests.ts";

const dockerfile = readFileSync(`${repoRoot}Dockerfile`, "utf8");
const dockerignore = readFileSync(`${repoRoot}.dockerignore`, "utf8");
const instructions = dockerfile
  .replace(/\\\n/g, " ")
  .split("\n")
  .filter((line) => line.trim() !== "" && !line.trimStart().startsWith("#"));

test("the base image is Node slim, pinned to the project's Node version", () => {
  const pkg = JSON.parse(readFileSync(`${repoRoot}package.json`, "utf8")) as {
    devDependencies: Record<string, string>;
  };
  const image = /^ARG NODE_IMAGE=(\S+)$/m.exec(dockerfile)?.[1];
  expect(image).toBe(`node:${pkg.devDependencies.node}-bookworm-slim`);
  const froms = instructions.filter((l) => l.startsWith("FROM "));
  expect(froms.length).toBeGreaterThanOrEqual(2);
  for (const from of froms) expect(from).toMatch(/^FROM \$\{NODE_IMAGE\}( AS \w+)?$/);
  expect(dockerfile).not.toMatch(/:latest\b/);
});

test("production dependencies of the selected workspace only, without install scripts", () => {
  const install = instructions.find((l) => l.includes("npm ci"));
  expect(install).toMatch(/--omit=dev/);
  expect(install).toMatch(/--workspace "\$\{RUNNABLE\}"/);
  expect(install).toMatch(/--ignore-scripts/);
});

test("runs as a numeric non-root user, the one the pods declare, never Istio's 1337", () => {
  const users = instructions.filter((l) => l.startsWith("USER "));
  expect(users).toHaveLength(1);
  const [uid, gid] = (users[0] ?? "").slice(5).split(":").map(Number);
  expect(uid).toBeGreaterThan(0);
  expect(uid).not.toBe(1337);
  const pod = readFileSync(`${repoRoot}k8s/base/workloads/pod-defaults.yaml`, "utf8");
  expect(pod).toContain(`runAsUser: ${uid}`);
  expect(pod).toContain(`runAsGroup: ${gid}`);
});

test("starts the runnable the contract's way, with node as PID 1", () => {
  const entrypoint = instructions.find((l) => l.startsWith("ENTRYPOINT "));
  expect(entrypoint).toContain("exec node --import ./lib/src/telemetry-register.ts");
  expect(entrypoint).toMatch(/\\"\$\{RUNNABLE\}\/src\/main\.ts\\"/);
  expect(instructions).toContain("WORKDIR /app");
});

test("no secrets baked in or sent as build context", () => {
  for (const line of instructions.filter((l) => /^(ENV|ARG) /.test(l))) {
    expect(line).not.toMatch(/SECRET|PASSWORD|TOKEN|API_KEY|DATABASE_URL|REDIS_URL/);
  }
  const rules = dockerignore.split("\n").map((l) => l.trim());
  expect(rules[rules.findIndex((l) => !l.startsWith("#") && l !== "")]).toBe("**");
  expect(rules).toContain("**/.env*");
  expect(rules).toContain("**/node_modules");
  expect(
    rules.filter((l) => l.startsWith("!")).every((l) => !/k8s|istio|\.git|\.env/.test(l)),
  ).toBe(true);
});
