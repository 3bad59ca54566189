// The documented canary procedure (k8s/canary.ts, then kubectl apply -k) run on a
// copy of the manifests: the shifted overlay still renders, validates, and routes
// the requested split for that service only.
import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { IVirtualService } from "@kubernetes-models/istio/networking.istio.io/v1";
import { afterAll, describe, expect, test } from "vitest";
import { findKubectl, type Manifest, parseYaml, repoRoot, validateObject } from "./manifests.ts";

const kubectl = findKubectl();
const copy = mkdtempSync(join(tmpdir(), "coinmesh-canary-"));
for (const dir of ["k8s", "istio"])
  cpSync(`${repoRoot}${dir}`, join(copy, dir), { recursive: true });
// The script imports `yaml` from the repository's dependencies.
symlinkSync(`${repoRoot}node_modules`, join(copy, "node_modules"), "dir");
afterAll(() => rmSync(copy, { recursive: true, force: true }));

function shift(...args: string[]) {
  return spawnSync(process.execPath, [join(copy, "k8s/canary.ts"), ...args], { encoding: "utf8" });
}

function splits(objects: Manifest[], name: string): string[] {
  const vs = objects.find((o) => o.kind === "VirtualService" && o.metadata.name === name) as
    | (IVirtualService & Manifest)
    | undefined;
  return (vs?.spec?.http ?? [])
    .filter((r) => (r.route ?? []).length > 1)
    .map((r) => (r.route ?? []).map((d) => `${d.destination.subset}=${d.weight}`).join(","));
}

describe.skipIf(!kubectl)("shifting canary traffic", () => {
  test("90/10 for order in prod: valid manifests, every order route split, others untouched", () => {
    const result = shift("prod", "order", "10");
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    expect(result.stdout).toContain("prod/order: stable 90%, canary 10%");

    const text = execFileSync(kubectl as string, ["kustomize", join(copy, "k8s/overlays/prod")], {
      encoding: "utf8",
    });
    const objects = parseYaml(text);
    expect(objects.flatMap(validateObject)).toEqual([]);
    expect(splits(objects, "order")).toEqual(["stable=90,canary=10", "stable=90,canary=10"]);
    for (const other of ["user", "rate", "gateway"]) {
      for (const split of splits(objects, other)) expect(split).toBe("stable=100,canary=0");
    }
    expect(objects.some((o) => o.kind === "CanaryWeights")).toBe(false);
  });

  test("full promotion and rollback of the gateway in staging", () => {
    const render = () =>
      parseYaml(
        execFileSync(kubectl as string, ["kustomize", join(copy, "k8s/overlays/staging")], {
          encoding: "utf8",
        }),
      );
    expect(shift("staging", "gateway", "100").status).toBe(0);
    expect(splits(render(), "gateway")).toEqual(["stable=0,canary=100", "stable=0,canary=100"]);
    expect(shift("staging", "gateway", "0").status).toBe(0);
    expect(splits(render(), "gateway")).toEqual(["stable=100,canary=0", "stable=100,canary=0"]);
  });

  test("bad requests change nothing", () => {
    const file = join(copy, "k8s/overlays/dev/canary-weights.yaml");
    const before = readFileSync(file, "utf8");
    for (const args of [
      ["dev", "ledger", "10"],
      ["dev", "user", "110"],
      ["dev", "user", "2.5"],
      ["nowhere", "user", "5"],
      ["dev"],
    ]) {
      const result = shift(...args);
      expect(result.status, args.join(" ")).not.toBe(0);
      expect(result.stderr.length).toBeGreaterThan(0);
    }
    expect(readFileSync(file, "utf8")).toBe(before);
  });
});
