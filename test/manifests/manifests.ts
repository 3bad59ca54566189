// Renders the kustomize overlays with kubectl and gives the tests typed access to
// the objects. Also the schema check: kubernetes-models / @kubernetes-models/istio
// validators, plus a probe for unknown fields, which those validators accept.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  existsSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { IstioOperator } from "@kubernetes-models/istio/install.istio.io/v1alpha1";
import type {
  IDestinationRule,
  IGateway,
  IServiceEntry,
  ISidecar,
  IVirtualService,
} from "@kubernetes-models/istio/networking.istio.io/v1";
import {
  DestinationRule,
  Gateway,
  ServiceEntry,
  Sidecar,
  VirtualService,
} from "@kubernetes-models/istio/networking.istio.io/v1";
import type {
  IAuthorizationPolicy,
  IPeerAuthentication,
  IRequestAuthentication,
} from "@kubernetes-models/istio/security.istio.io/v1";
import {
  AuthorizationPolicy,
  PeerAuthentication,
  RequestAuthentication,
} from "@kubernetes-models/istio/security.istio.io/v1";
import type { ITelemetry } from "@kubernetes-models/istio/telemetry.istio.io/v1";
import { Telemetry } from "@kubernetes-models/istio/telemetry.istio.io/v1";
import type { IDeployment, IStatefulSet } from "kubernetes-models/apps/v1";
import { Deployment, StatefulSet } from "kubernetes-models/apps/v1";
import type { IHorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2";
import type { INetworkPolicy } from "kubernetes-models/networking.k8s.io/v1";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1";
import type { IPodDisruptionBudget } from "kubernetes-models/policy/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import type { IRole, IRoleBinding } from "kubernetes-models/rbac.authorization.k8s.io/v1";
import { Role, RoleBinding } from "kubernetes-models/rbac.authorization.k8s.io/v1";
import type { ISecret, IService } from "kubernetes-models/v1";
import { ConfigMap, Namespace, Secret, Service, ServiceAccount } from "kubernetes-models/v1";
import { parseAllDocuments } from "yaml";

export const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
export const overlays = ["dev", "staging", "prod"] as const;
export type Overlay = (typeof overlays)[number];
export const runnables = ["user", "order", "rate", "gateway"] as const;
export const backends = ["user", "order", "rate"] as const;

export type Manifest = {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  [field: string]: unknown;
};

/** kubectl with its built-in kustomize, or undefined (tests skip, but fail under CI). */
export function findKubectl(): string | undefined {
  for (const candidate of [process.env.KUBECTL, "kubectl", "/usr/bin/kubectl"]) {
    if (!candidate) continue;
    try {
      execFileSync(candidate, ["version", "--client"], { stdio: "ignore" });
      return candidate;
    } catch {}
  }
  if (process.env.CI) {
    throw new Error("kubectl not found (needed to render the overlays) and CI is set");
  }
  console.warn("manifest tests skipped: kubectl (with kustomize) is not installed");
  return undefined;
}

const rendered = new Map<string, Manifest[]>();

// Test files run in separate workers; they share renders through a file named
// after the content of everything kustomize reads, so an edit re-renders.
function sourcesHash(dir: string): string {
  const hash = createHash("sha256").update(dir);
  for (const root of ["k8s", "istio", "monitoring"]) {
    const files = readdirSync(`${repoRoot}${root}`, { recursive: true, encoding: "utf8" }).sort();
    for (const file of files) {
      const path = `${repoRoot}${root}/${file}`;
      if (statSync(path).isFile()) hash.update(path).update(readFileSync(path));
    }
  }
  return hash.digest("hex").slice(0, 16);
}

/** `kubectl kustomize <dir>`, parsed; cached per directory and content. */
export function render(kubectl: string, dir: string): Manifest[] {
  const cached = rendered.get(dir);
  if (cached) return cached;
  const cacheFile = join(tmpdir(), `coinmesh-kustomize-${sourcesHash(dir)}.yaml`);
  let text: string;
  if (existsSync(cacheFile)) {
    text = readFileSync(cacheFile, "utf8");
  } else {
    text = execFileSync(kubectl, ["kustomize", dir], {
      encoding: "utf8",
      maxBuffer: 64 * 1024 * 1024,
    });
    const partial = `${cacheFile}.${process.pid}`;
    writeFileSync(partial, text);
    renameSync(partial, cacheFile);
  }
  const objects = parseYaml(text);
  rendered.set(dir, objects);
  return objects;
}

export function parseYaml(text: string): Manifest[] {
  return parseAllDocuments(text).map((doc) => {
    if (doc.errors.length > 0) throw doc.errors[0];
    return doc.toJS() as Manifest;
  });
}

export function overlayDir(overlay: Overlay): string {
  return `${repoRoot}k8s/overlays/${overlay}`;
}

/** Objects of one kind, typed as the model's interface. */
export function ofKind<T>(
  objects: Manifest[],
  model: { apiVersion: string; kind: string; new (data: never): T },
): T[] {
  return objects.filter(
    (o) => o.apiVersion === model.apiVersion && o.kind === model.kind,
  ) as unknown as T[];
}

type Validating = { validate(): void };
type ModelClass = { apiVersion: string; kind: string; new (data: never): Validating };

// Every kind the manifests may contain. A kind missing here fails the schema test.
const models: ModelClass[] = [
  Namespace,
  ServiceAccount,
  Role,
  RoleBinding,
  Service,
  ConfigMap,
  Secret,
  Deployment,
  StatefulSet,
  PodDisruptionBudget,
  HorizontalPodAutoscaler,
  NetworkPolicy,
  Gateway,
  VirtualService,
  DestinationRule,
  ServiceEntry,
  Sidecar,
  PeerAuthentication,
  AuthorizationPolicy,
  RequestAuthentication,
  Telemetry,
  IstioOperator,
];

function modelFor(object: Manifest): ModelClass | undefined {
  return models.find((m) => m.apiVersion === object.apiVersion && m.kind === object.kind);
}

type SchemaError = { instancePath: string; message?: string };

function schemaErrors(model: ModelClass, data: unknown): SchemaError[] {
  try {
    new model(data as never).validate();
    return [];
  } catch (error) {
    const errors = (error as { errors?: SchemaError[] }).errors;
    if (!errors) throw error;
    return errors;
  }
}

const probe = Symbol("probe");

/**
 * Fields the schema does not declare. The validators ignore unknown fields, so
 * each field in turn is replaced by a value no schema accepts: a declared field
 * then fails at its own path, an unknown one passes unnoticed.
 */
function unknownFields(model: ModelClass, original: Manifest): string[] {
  const object = structuredClone(original);
  const unknown: string[] = [];
  const visit = (node: unknown, path: string): void => {
    if (Array.isArray(node)) {
      node.forEach((item, index) => {
        visit(item, `${path}/${index}`);
      });
      return;
    }
    if (node === null || typeof node !== "object") return;
    const record = node as Record<string, unknown>;
    for (const key of Object.keys(record)) {
      const value = record[key];
      const fieldPath = `${path}/${key.replaceAll("~", "~0").replaceAll("/", "~1")}`;
      record[key] = probe;
      const errors = schemaErrors(model, object);
      record[key] = value;
      if (!errors.some((e) => e.instancePath === fieldPath)) {
        unknown.push(fieldPath);
        continue;
      }
      visit(value, fieldPath);
    }
  };
  visit(object, "");
  return unknown;
}

// kustomize wraps long base64 values over several lines; the API server's decoder
// (Go's encoding/base64) ignores the newlines, the "byte" format check does not.
function unwrapSecretData(object: Manifest): Manifest {
  if (object.kind !== "Secret" || typeof object.data !== "object" || object.data === null) {
    return object;
  }
  const data = Object.fromEntries(
    Object.entries(object.data).map(([key, value]) => [key, String(value).replace(/\s+/g, "")]),
  );
  return { ...object, data };
}

/** Schema violations and unknown fields of one object, as readable lines. */
export function validateObject(manifest: Manifest): string[] {
  const object = unwrapSecretData(manifest);
  const where = `${object.kind} ${object.metadata?.namespace ?? "-"}/${object.metadata?.name}`;
  const model = modelFor(object);
  if (!model) return [`${where}: no schema for ${object.apiVersion} ${object.kind}`];
  const problems = schemaErrors(model, object).map(
    (e) => `${where}: ${e.instancePath || "/"} ${e.message ?? "is invalid"}`,
  );
  if (problems.length > 0) return problems;
  return unknownFields(model, object).map((path) => `${where}: unknown field ${path}`);
}

/** The data of a generated ConfigMap, found by its name before the hash suffix. */
export function configData(objects: Manifest[], name: string): Record<string, string> {
  const found = objects.filter(
    (o) => o.kind === "ConfigMap" && new RegExp(`^${name}-[a-z0-9]{10}$`).test(o.metadata.name),
  );
  if (found.length !== 1) throw new Error(`expected one ConfigMap ${name}, found ${found.length}`);
  return (found[0]?.data ?? {}) as Record<string, string>;
}

export type LabelSelector = {
  matchLabels?: Record<string, string>;
  matchExpressions?: Array<{ key: string; operator: string; values?: string[] }>;
};

/** Kubernetes label-selector semantics (an empty selector matches everything). */
export function selects(selector: LabelSelector | undefined, labels: Record<string, string>) {
  if (!selector) return false;
  const byLabels = Object.entries(selector.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
  const byExpressions = (selector.matchExpressions ?? []).every((e) => {
    const value = labels[e.key];
    switch (e.operator) {
      case "In":
        return value !== undefined && (e.values ?? []).includes(value);
      case "NotIn":
        return value === undefined || !(e.values ?? []).includes(value);
      case "Exists":
        return value !== undefined;
      case "DoesNotExist":
        return value === undefined;
      default:
        throw new Error(`unknown selector operator ${e.operator}`);
    }
  });
  return byLabels && byExpressions;
}

/** An overlay's rendered objects, grouped by kind with their model types. */
export function loadOverlay(kubectl: string, overlay: Overlay) {
  const objects = render(kubectl, overlayDir(overlay));
  const kind = <T>(k: string) => objects.filter((o) => o.kind === k) as unknown as T[];
  return {
    objects,
    deployments: kind<IDeployment & Manifest>("Deployment"),
    statefulSets: kind<IStatefulSet & Manifest>("StatefulSet"),
    services: kind<IService & Manifest>("Service"),
    serviceAccounts: kind<Manifest>("ServiceAccount"),
    roles: kind<IRole & Manifest>("Role"),
    roleBindings: kind<IRoleBinding & Manifest>("RoleBinding"),
    pdbs: kind<IPodDisruptionBudget & Manifest>("PodDisruptionBudget"),
    hpas: kind<IHorizontalPodAutoscaler & Manifest>("HorizontalPodAutoscaler"),
    policies: kind<INetworkPolicy & Manifest>("NetworkPolicy"),
    secrets: kind<ISecret & Manifest>("Secret"),
    virtualServices: kind<IVirtualService & Manifest>("VirtualService"),
    destinationRules: kind<IDestinationRule & Manifest>("DestinationRule"),
    gateways: kind<IGateway & Manifest>("Gateway"),
    serviceEntries: kind<IServiceEntry & Manifest>("ServiceEntry"),
    sidecars: kind<ISidecar & Manifest>("Sidecar"),
    authorizations: kind<IAuthorizationPolicy & Manifest>("AuthorizationPolicy"),
    peers: kind<IPeerAuthentication & Manifest>("PeerAuthentication"),
    requestAuths: kind<IRequestAuthentication & Manifest>("RequestAuthentication"),
    telemetries: kind<ITelemetry & Manifest>("Telemetry"),
  };
}

/** A pod as NetworkPolicies see it: its namespace and labels. */
export type Pod = { namespace: string; labels: Record<string, string> };

/** The pod of a rendered Deployment or StatefulSet, by namespace and `app` label. */
export function podOf(objects: Manifest[], namespace: string, app: string): Pod {
  const found = objects.filter(
    (o) =>
      (o.kind === "Deployment" || o.kind === "StatefulSet") &&
      o.metadata.namespace === namespace &&
      o.metadata.labels?.app === app,
  ) as unknown as Array<IDeployment | IStatefulSet>;
  const labels = found[0]?.spec?.template.metadata?.labels;
  if (!labels) throw new Error(`no workload app=${app} in namespace ${namespace}`);
  return { namespace, labels };
}

/**
 * Whether the NetworkPolicies let `from` open a TCP connection to `to` on `port`,
 * with Kubernetes semantics: a pod no policy selects for a direction is open in it;
 * a peer without namespaceSelector is in the policy's namespace; namespaces carry
 * kubernetes.io/metadata.name. ipBlock peers never match a pod (pod IPs are private
 * and the blocks here are the public internet).
 */
export function reachable(objects: Manifest[], from: Pod, to: Pod, port: number): boolean {
  const policies = objects.filter((o) => o.kind === "NetworkPolicy") as unknown as Array<
    INetworkPolicy & Manifest
  >;
  const namespaceLabels = (name: string) => ({
    ...objects.find((o) => o.kind === "Namespace" && o.metadata.name === name)?.metadata.labels,
    "kubernetes.io/metadata.name": name,
  });
  type Peer = NonNullable<NonNullable<INetworkPolicy["spec"]>["ingress"]>[number]["from"];
  const peerMatches = (peers: Peer, policyNamespace: string, pod: Pod) =>
    !peers ||
    peers.some(
      (peer) =>
        !peer.ipBlock &&
        (peer.namespaceSelector
          ? selects(peer.namespaceSelector, namespaceLabels(pod.namespace))
          : pod.namespace === policyNamespace) &&
        (!peer.podSelector || selects(peer.podSelector, pod.labels)),
    );
  const portMatches = (ports: Array<{ port?: number | string }> | undefined) =>
    !ports || ports.some((p) => p.port === port);
  const applying = (pod: Pod, type: "Ingress" | "Egress") =>
    policies.filter(
      (p) =>
        p.metadata.namespace === pod.namespace &&
        selects(p.spec?.podSelector, pod.labels) &&
        (p.spec?.policyTypes ?? (p.spec?.egress ? ["Ingress", "Egress"] : ["Ingress"])).includes(
          type,
        ),
    );
  const egress = applying(from, "Egress");
  const ingress = applying(to, "Ingress");
  const out =
    egress.length === 0 ||
    egress.some((p) =>
      (p.spec?.egress ?? []).some(
        (rule) => portMatches(rule.ports) && peerMatches(rule.to, p.metadata.namespace ?? "", to),
      ),
    );
  const into =
    ingress.length === 0 ||
    ingress.some((p) =>
      (p.spec?.ingress ?? []).some(
        (rule) =>
          portMatches(rule.ports) && peerMatches(rule.from, p.metadata.namespace ?? "", from),
      ),
    );
  return out && into;
}
