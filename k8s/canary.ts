// Shifts canary traffic for one service in one overlay:
//   node k8s/canary.ts <overlay> <service> <canary-percent>
// It rewrites k8s/overlays/<overlay>/canary-weights.yaml (stable = 100 - canary);
// `kubectl apply -k k8s/overlays/<overlay>` then changes the VirtualService.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseDocument } from "yaml";

const services = ["user", "order", "rate", "gateway"];

export function weightsFile(k8sDir: string, overlay: string): string {
  return join(k8sDir, "overlays", overlay, "canary-weights.yaml");
}

export function setCanaryWeight(file: string, service: string, percent: number): void {
  if (!services.includes(service)) {
    throw new Error(`unknown service "${service}"; one of ${services.join(", ")}`);
  }
  if (!Number.isInteger(percent) || percent < 0 || percent > 100) {
    throw new Error(`canary percent must be an integer from 0 to 100, got ${percent}`);
  }
  const doc = parseDocument(readFileSync(file, "utf8"));
  if (doc.get("kind") !== "CanaryWeights") {
    throw new Error(`${file} is not a CanaryWeights file`);
  }
  doc.setIn(["spec", service, "stable"], 100 - percent);
  doc.setIn(["spec", service, "canary"], percent);
  writeFileSync(file, doc.toString());
}

function main(argv: string[]): number {
  const [overlay, service, percentText] = argv;
  if (overlay === undefined || service === undefined || percentText === undefined) {
    console.error("usage: node k8s/canary.ts <overlay> <service> <canary-percent>");
    return 2;
  }
  const file = weightsFile(import.meta.dirname, overlay);
  try {
    setCanaryWeight(file, service, Number(percentText));
  } catch (error) {
    console.error(error instanceof Error ? error.message : error);
    return 1;
  }
  const percent = Number(percentText);
  console.log(`${overlay}/${service}: stable ${100 - percent}%, canary ${percent}%`);
  console.log(`apply with: kubectl apply -k k8s/overlays/${overlay}`);
  return 0;
}

if (import.meta.main) {
  process.exitCode = main(process.argv.slice(2));
}
