// What every workload must have in every overlay: identity, probes, resources,
// restricted security, a PDB and an HPA, drain timing that matches the app, pinned
// images, no secret values, and network policies that allow exactly the call graph.
// The dev-only tools (Postgres, Redis, Jaeger, Prometheus, Grafana) meet the same
// bar except where noted; monitoring-stack.test.ts checks what is particular to them.
import type { IDeployment } from "kubernetes-models/apps/v1";
import type { IContainer, IPodTemplateSpec } from "kubernetes-models/v1";
import { describe, expect, test } from "vitest";
import {
  findKubectl,
  loadOverlay,
  type Manifest,
  overlays,
  podOf,
  reachable,
  runnables,
  selects,
} from "./manifests.ts";

const kubectl = findKubectl();
const versions = ["stable", "canary"] as const;

const load = (overlay: (typeof overlays)[number]) => loadOverlay(kubectl as string, overlay);

function workload(deployments: IDeployment[], app: string, version: string): IDeployment {
  const found = deployments.filter(
    (d) => d.metadata?.labels?.app === app && d.metadata?.labels?.version === version,
  );
  expect(found, `${app} ${version}`).toHaveLength(1);
  return found[0] as IDeployment;
}

function template(d: { spec?: { template?: IPodTemplateSpec } }): IPodTemplateSpec {
  const t = d.spec?.template;
  if (!t?.spec) throw new Error("no pod template");
  return t;
}

function allContainers(t: IPodTemplateSpec): IContainer[] {
  return [...(t.spec?.initContainers ?? []), ...(t.spec?.containers ?? [])];
}

describe.skipIf(!kubectl).each(overlays)("%s workloads", (overlay) => {
  test("each runnable has a stable and a canary Deployment, labelled and selected by app + version", () => {
    const { deployments } = load(overlay);
    for (const app of runnables) {
      for (const version of versions) {
        const d = workload(deployments, app, version);
        expect(d.metadata?.name).toBe(version === "stable" ? app : `${app}-canary`);
        expect(d.spec?.selector.matchLabels).toEqual({ app, version });
        expect(template(d).metadata?.labels).toMatchObject({
          app,
          version,
          "app.kubernetes.io/name": app,
          "app.kubernetes.io/part-of": "coinmesh",
        });
        const env = template(d).spec?.containers[0]?.env ?? [];
        expect(env.find((e) => e.name === "SERVICE_VERSION")?.valueFrom?.fieldRef?.fieldPath).toBe(
          "metadata.labels['version']",
        );
      }
    }
  });

  test("every pod runs as its own existing ServiceAccount", () => {
    const { deployments, statefulSets, serviceAccounts, objects } = load(overlay);
    for (const d of [...deployments, ...statefulSets]) {
      const sa = template(d).spec?.serviceAccountName;
      expect(sa, d.metadata?.name).toBeDefined();
      expect(
        serviceAccounts.some(
          (s) => s.metadata.name === sa && s.metadata.namespace === d.metadata?.namespace,
        ),
        `${d.metadata?.name} uses ServiceAccount ${sa}`,
      ).toBe(true);
    }
    for (const app of runnables) {
      const users = deployments.filter((d) => template(d).spec?.serviceAccountName === app);
      expect(users.map((d) => d.metadata?.labels?.app)).toEqual([app, app]);
    }
    expect(objects.length).toBeGreaterThan(0);
  });

  test("probes: native gRPC health on the serving port, for every runnable's containers", () => {
    const { deployments } = load(overlay);
    for (const app of runnables) {
      const port = app === "gateway" ? 8080 : 50051;
      for (const version of versions) {
        for (const c of template(workload(deployments, app, version)).spec?.containers ?? []) {
          for (const [kind, probe] of Object.entries({
            startup: c.startupProbe,
            readiness: c.readinessProbe,
            liveness: c.livenessProbe,
          })) {
            const where = `${app} ${version} ${c.name} ${kind}`;
            expect(probe?.grpc, where).toEqual({ port });
            expect(probe?.httpGet ?? probe?.exec ?? probe?.tcpSocket, where).toBeUndefined();
          }
        }
      }
    }
  });

  test("every pod's containers have startup, readiness and liveness probes", () => {
    const { deployments, statefulSets } = load(overlay);
    for (const d of [...deployments, ...statefulSets]) {
      for (const c of template(d).spec?.containers ?? []) {
        const where = `${d.metadata?.namespace}/${d.metadata?.name}/${c.name}`;
        expect(c.startupProbe, where).toBeDefined();
        expect(c.readinessProbe, where).toBeDefined();
        expect(c.livenessProbe, where).toBeDefined();
      }
    }
  });

  test("ports are named, and PORT matches the serving port", () => {
    const { deployments } = load(overlay);
    for (const app of runnables) {
      const c = template(workload(deployments, app, "stable")).spec?.containers[0];
      const serving = app === "gateway" ? "http" : "grpc";
      const ports = Object.fromEntries((c?.ports ?? []).map((p) => [p.name, p.containerPort]));
      expect(ports).toEqual({ [serving]: app === "gateway" ? 8080 : 50051, "http-metrics": 9464 });
      expect(c?.env?.find((e) => e.name === "PORT")?.value).toBe(String(ports[serving]));
    }
  });

  test("every container has CPU and memory requests and limits", () => {
    const { deployments, statefulSets } = load(overlay);
    for (const d of [...deployments, ...statefulSets]) {
      for (const c of allContainers(template(d))) {
        const r = c.resources;
        for (const field of [
          r?.requests?.cpu,
          r?.requests?.memory,
          r?.limits?.cpu,
          r?.limits?.memory,
        ]) {
          expect(field, `${d.metadata?.name}/${c.name}`).toBeDefined();
        }
      }
    }
  });

  test("every pod meets the restricted Pod Security Standard, with a read-only root", () => {
    const { deployments, statefulSets } = load(overlay);
    for (const d of [...deployments, ...statefulSets]) {
      const spec = template(d).spec;
      const pod = spec?.securityContext;
      expect(pod?.runAsNonRoot, d.metadata?.name).toBe(true);
      expect(pod?.seccompProfile?.type).toBe("RuntimeDefault");
      expect(pod?.runAsUser).toBeGreaterThan(0);
      expect(pod?.runAsUser, "1337 is the Istio proxy's UID").not.toBe(1337);
      expect(spec?.automountServiceAccountToken).toBe(false);
      for (const c of allContainers(template(d))) {
        const where = `${d.metadata?.name}/${c.name}`;
        expect(c.securityContext?.allowPrivilegeEscalation, where).toBe(false);
        expect(c.securityContext?.readOnlyRootFilesystem, where).toBe(true);
        expect(c.securityContext?.capabilities?.drop, where).toEqual(["ALL"]);
        expect(c.securityContext?.privileged ?? false, where).toBe(false);
      }
    }
    const { objects } = load(overlay);
    const namespaces = new Set(
      [...deployments, ...statefulSets].map((d) => d.metadata?.namespace as string),
    );
    expect(namespaces.has("coinmesh")).toBe(true);
    for (const name of namespaces) {
      const namespace = objects.find((o) => o.kind === "Namespace" && o.metadata.name === name);
      expect(namespace?.metadata.labels?.["pod-security.kubernetes.io/enforce"], name).toBe(
        "restricted",
      );
    }
  });

  test("runnables have a writable /tmp and spread over zones and nodes", () => {
    const { deployments } = load(overlay);
    for (const app of runnables) {
      for (const version of versions) {
        const t = template(workload(deployments, app, version));
        for (const c of allContainers(t)) {
          expect(c.volumeMounts?.find((m) => m.mountPath === "/tmp")?.name).toBe("tmp");
        }
        expect(t.spec?.volumes?.find((v) => v.name === "tmp")?.emptyDir).toBeDefined();
        const keys = (t.spec?.topologySpreadConstraints ?? []).map((c) => c.topologyKey);
        expect(keys).toEqual(["topology.kubernetes.io/zone", "kubernetes.io/hostname"]);
      }
    }
  });

  // The value a container sees for an environment variable: its own env first, then
  // the ConfigMaps of envFrom (later ones win, as in Kubernetes).
  function envValue(objects: Manifest[], c: IContainer, name: string): string | undefined {
    const own = c.env?.find((e) => e.name === name);
    if (own) return own.value;
    let found: string | undefined;
    for (const source of c.envFrom ?? []) {
      const map = objects.find(
        (o) => o.kind === "ConfigMap" && o.metadata.name === source.configMapRef?.name,
      );
      const value = (map?.data as Record<string, string> | undefined)?.[name];
      if (value !== undefined) found = value;
    }
    return found;
  }

  test("drain timing: preStop + SHUTDOWN_GRACE_MS < sidecar drain < termination grace period", () => {
    const { deployments, objects } = load(overlay);
    for (const app of runnables) {
      for (const version of versions) {
        const t = template(workload(deployments, app, version));
        const where = `${app} ${version}`;
        const c = t.spec?.containers[0] as IContainer;
        const graceMs = Number(envValue(objects, c, "SHUTDOWN_GRACE_MS"));
        expect(graceMs, `${where} SHUTDOWN_GRACE_MS`).toBeGreaterThan(0);
        const preStop = c.lifecycle?.preStop?.sleep?.seconds ?? 0;
        expect(preStop, `${where} preStop sleep`).toBeGreaterThan(0);
        const appDrain = preStop + graceMs / 1000;
        const proxy = t.metadata?.annotations?.["proxy.istio.io/config"] ?? "";
        const sidecarDrain = Number(/terminationDrainDuration:\s*(\d+)s/.exec(proxy)?.[1]);
        // The draining app still calls its backends through the sidecar.
        expect(sidecarDrain, `${where} sidecar drain after the app's`).toBeGreaterThan(appDrain);
        expect(
          t.spec?.terminationGracePeriodSeconds,
          `${where} grace period after the sidecar's drain`,
        ).toBeGreaterThan(sidecarDrain);
      }
    }
  });

  // Jaeger, Prometheus and Grafana (dev only) keep their data in an emptyDir: one
  // replica, replaced rather than rolled. An HPA could not scale them out, and a PDB
  // on a single replica would only block node drains.
  const singleReplicaNamespaces = new Set(["observability", "monitoring"]);

  test("each Deployment has exactly one PDB and one HPA, and nothing else does", () => {
    const { deployments, pdbs, hpas } = load(overlay);
    for (const d of deployments) {
      const labels = template(d).metadata?.labels ?? {};
      const covering = pdbs.filter((p) => selects(p.spec?.selector, labels));
      if (d.metadata?.namespace !== "coinmesh") {
        const where = `${d.metadata?.namespace}/${d.metadata?.name}`;
        expect(singleReplicaNamespaces.has(d.metadata?.namespace ?? ""), where).toBe(true);
        expect(d.spec?.replicas, where).toBe(1);
        expect(d.spec?.strategy?.type, where).toBe("Recreate");
        expect(covering, where).toEqual([]);
        expect(hpas.filter((h) => h.spec.scaleTargetRef.name === d.metadata?.name)).toEqual([]);
        continue;
      }
      expect(covering.map((p) => p.metadata?.name)).toEqual([d.metadata?.name]);
      const scaling = hpas.filter((h) => h.spec.scaleTargetRef.name === d.metadata?.name);
      expect(scaling).toHaveLength(1);
      expect(scaling[0]?.spec.scaleTargetRef.kind).toBe("Deployment");
      expect(d.spec?.replicas, "the HPA owns the replica count").toBeUndefined();
      const min = scaling[0]?.spec.minReplicas ?? 0;
      expect(min).toBeGreaterThanOrEqual(1);
      expect(scaling[0]?.spec.maxReplicas).toBeGreaterThanOrEqual(min);
    }
    expect(pdbs).toHaveLength(8);
    expect(hpas).toHaveLength(8);
  });

  test("images are pinned (a tag, never latest), canary and stable start identical", () => {
    const { deployments, statefulSets } = load(overlay);
    for (const d of [...deployments, ...statefulSets]) {
      for (const c of allContainers(template(d))) {
        const where = `${d.metadata?.name}/${c.name}`;
        expect(c.image, where).toMatch(/^[a-z0-9./-]+:[A-Za-z0-9._-]+$/);
        expect(c.image).not.toMatch(/:latest$/);
        // Images this repository does not build: an upstream release number, not a
        // moving tag like postgres:17 or grafana/grafana:main (Postgres numbers its
        // releases major.minor, the others major.minor.patch).
        if (!/(^|\/)coinmesh\/[a-z]+:/.test(c.image ?? "")) {
          expect(c.image, where).toMatch(/:v?\d+\.\d+(\.\d+)?(-[a-z0-9]+)?$/);
        }
      }
    }
    for (const app of runnables) {
      const image = (v: string) =>
        template(workload(deployments, app, v)).spec?.containers[0]?.image;
      expect(image("canary")).toBe(image("stable"));
    }
  });

  test("no secret values: Secrets only by reference, generated ones hold no credentials", () => {
    const { deployments, statefulSets, secrets, objects } = load(overlay);
    const sensitive = /SECRET|PASSWORD|TOKEN|API_KEY|DATABASE_URL|REDIS_URL/;
    for (const d of [...deployments, ...statefulSets]) {
      for (const c of allContainers(template(d))) {
        for (const e of c.env ?? []) {
          if (sensitive.test(e.name)) {
            expect(e.value, `${d.metadata?.name}/${c.name} ${e.name}`).toBeUndefined();
            expect(e.valueFrom?.secretKeyRef).toBeDefined();
          }
        }
      }
    }
    for (const cm of objects.filter((o) => o.kind === "ConfigMap")) {
      for (const key of Object.keys((cm.data ?? {}) as object)) {
        expect(key, `ConfigMap ${cm.metadata.name}`).not.toMatch(sensitive);
      }
    }
    // Only dev generates Secrets: in-cluster addresses without passwords.
    expect(secrets.length > 0).toBe(overlay === "dev");
    for (const s of secrets) {
      for (const value of Object.values(s.data ?? {})) {
        const url = new URL(Buffer.from(value, "base64").toString("utf8"));
        expect(url.password, s.metadata?.name).toBe("");
        expect(url.hostname).toMatch(/\.svc\.cluster\.local$/);
      }
    }
  });

  test("every Service selects pods and targets ports they declare", () => {
    const { deployments, statefulSets, services } = load(overlay);
    const pods = [...deployments, ...statefulSets].map(template);
    for (const s of services) {
      const selected = pods.filter((t) =>
        selects({ matchLabels: s.spec?.selector }, t.metadata?.labels ?? {}),
      );
      expect(selected.length, `Service ${s.metadata?.name}`).toBeGreaterThan(0);
      for (const port of s.spec?.ports ?? []) {
        for (const t of selected) {
          const declared = (t.spec?.containers ?? []).flatMap((c) => c.ports ?? []);
          expect(
            declared.some((p) => p.name === port.targetPort || p.containerPort === port.targetPort),
            `${s.metadata?.name}:${port.name}`,
          ).toBe(true);
        }
      }
    }
  });

  test("network policies deny by default and allow exactly the call graph", () => {
    const { policies, objects } = load(overlay);
    const denyAll = policies.find(
      (p) =>
        p.metadata.namespace === "coinmesh" &&
        Object.keys(p.spec?.podSelector ?? { x: 1 }).length === 0 &&
        p.spec?.policyTypes?.includes("Ingress") &&
        p.spec?.policyTypes?.includes("Egress") &&
        !p.spec?.ingress &&
        !p.spec?.egress,
    );
    expect(denyAll?.metadata?.name).toBe("default-deny");
    const calls = new Set([
      "gateway>user",
      "gateway>order",
      "gateway>rate",
      "order>user",
      "order>rate",
    ]);
    for (const from of runnables) {
      for (const to of runnables) {
        if (from === to) continue;
        const port = to === "gateway" ? 8080 : 50051;
        const pod = (app: string) => podOf(objects, "coinmesh", app);
        expect(reachable(objects, pod(from), pod(to), port), `${from} -> ${to}`).toBe(
          calls.has(`${from}>${to}`),
        );
      }
    }
  });
});
