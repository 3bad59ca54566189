// Every rendered object is valid against the Kubernetes and Istio schemas, and
// carries no field those schemas do not declare.
import { readFileSync } from "node:fs";
import { describe, expect, test } from "vitest";
import {
  findKubectl,
  type Manifest,
  overlayDir,
  overlays,
  parseYaml,
  render,
  repoRoot,
  validateObject,
} from "./manifests.ts";

const kubectl = findKubectl();

describe.skipIf(!kubectl)("rendered overlays against the schemas", () => {
  test.each(overlays)("%s: every object validates, with no unknown field", (overlay) => {
    const objects = render(kubectl as string, overlayDir(overlay));
    expect(objects.length).toBeGreaterThan(50);
    expect(objects.flatMap(validateObject)).toEqual([]);
  });

  test("a misspelt or misplaced field is reported, at any depth", () => {
    const objects = render(kubectl as string, overlayDir("dev"));
    const deployment = structuredClone(
      objects.find((o) => o.kind === "Deployment" && o.metadata.name === "user"),
    ) as Manifest & { spec: { replica?: number; template: { spec: { containers: object[] } } } };
    deployment.spec.replica = 2;
    Object.assign(deployment.spec.template.spec.containers[0] ?? {}, {
      imagePullPolicyy: "Always",
    });
    expect(validateObject(deployment).sort()).toEqual([
      "Deployment coinmesh/user: unknown field /spec/replica",
      "Deployment coinmesh/user: unknown field /spec/template/spec/containers/0/imagePullPolicyy",
    ]);

    const route = structuredClone(
      objects.find((o) => o.kind === "VirtualService" && o.metadata.name === "rate"),
    ) as Manifest & { spec: { http: Array<{ route: object[] }> } };
    Object.assign(route.spec.http[1]?.route[0] ?? {}, { wieght: 5 });
    expect(validateObject(route)).toEqual([
      "VirtualService coinmesh/rate: unknown field /spec/http/1/route/0/wieght",
    ]);
  });

  test("a wrong type or enum value is reported", () => {
    const objects = render(kubectl as string, overlayDir("prod"));
    const peer = structuredClone(objects.find((o) => o.kind === "PeerAuthentication"));
    const broken = { ...peer, spec: { mtls: { mode: "STRICTLY" } } } as Manifest;
    expect(validateObject(broken).join("\n")).toMatch(/\/spec\/mtls\/mode/);
  });
});

// @kubernetes-models/istio gives IstioOperator.spec no schema (any object passes),
// so the envelope is validated and the settings the component relies on are
// asserted one by one.
test("the Istio installation file is an IstioOperator with the settings the component needs", () => {
  const [operator, ...rest] = parseYaml(
    readFileSync(`${repoRoot}istio/install/istio-operator.yaml`, "utf8"),
  );
  expect(rest).toEqual([]);
  const { spec, ...envelope } = operator as Manifest & { spec: unknown };
  expect(validateObject(envelope as Manifest)).toEqual([]);
  expect(spec).toMatchObject({
    components: { cni: { enabled: true } },
    meshConfig: {
      outboundTrafficPolicy: { mode: "REGISTRY_ONLY" },
      extensionProviders: [
        {
          name: "otel-tracing",
          opentelemetry: {
            service: "jaeger-collector.observability.svc.cluster.local",
            port: 4317,
          },
        },
      ],
    },
  });
  const telemetry = parseYaml(
    readFileSync(`${repoRoot}istio/telemetry.yaml`, "utf8"),
  )[0] as unknown as {
    spec: { tracing: Array<{ providers: Array<{ name: string }> }> };
  };
  expect(telemetry.spec.tracing[0]?.providers[0]?.name).toBe("otel-tracing");
});
