import { execFile } from "node:child_process";
import { tmpdir } from "node:os";
import { promisify } from "node:util";
import { fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import {
  Health,
  HealthCheckResponse_ServingStatus as Status,
} from "@coinmesh/proto/grpc/health/v1/health_pb";
import {
  ServerReflection,
  type ServerReflectionRequest,
} from "@coinmesh/proto/grpc/reflection/v1/reflection_pb";
import { RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Backends,
  outcome,
  type Protocol,
  rejection,
  startBackends,
  startTestGateway,
  type TestGateway,
} from "./harness.ts";

const run = promisify(execFile);
const BUF = new URL("../../node_modules/.bin/buf", import.meta.url).pathname;

let backends: Backends;
let gateway: TestGateway;

beforeAll(async () => {
  backends = await startBackends();
  gateway = await startTestGateway(backends.addresses);
});

afterAll(async () => {
  await gateway?.stop();
  await backends?.stop();
});

describe.each(["connect-json-h1", "grpc"] as Protocol[])("grpc.health.v1 over %s", (protocol) => {
  it("reports the gateway and each public service SERVING, and unknown services NOT_FOUND", async () => {
    const health = gateway.client(Health, protocol);
    expect((await health.check({ service: "" })).status).toBe(Status.SERVING);
    expect((await health.check({ service: "coinmesh.order.v1.OrderService" })).status).toBe(
      Status.SERVING,
    );
    expect((await rejection(health.check({ service: "no.Such" }))).code).toBe("NotFound");
  });

  it("watches: the current status first, SERVICE_UNKNOWN for unknown names", async () => {
    const health = gateway.client(Health, protocol);
    const first = async (service: string) => {
      const controller = new AbortController();
      for await (const res of health.watch({ service }, { signal: controller.signal })) {
        controller.abort();
        return res.status;
      }
    };
    expect(await first("coinmesh.rate.v1.RateService")).toBe(Status.SERVING);
    expect(await first("no.Such")).toBe(Status.SERVICE_UNKNOWN);
  });
});

describe("plain HTTP probes", () => {
  it("answers /healthz and /readyz while every backend serves", async () => {
    expect((await fetch(`${gateway.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${gateway.url}/readyz`)).status).toBe(200);
  });

  it("is alive but not ready while a backend is unreachable", async () => {
    const partial = await startTestGateway({ ...backends.addresses, order: "127.0.0.1:1" });
    try {
      expect((await fetch(`${partial.url}/healthz`)).status).toBe(200);
      expect((await fetch(`${partial.url}/readyz`)).status).toBe(503);
      const health = partial.client(Health, "grpc");
      expect((await health.check({ service: "coinmesh.order.v1.AccountService" })).status).toBe(
        Status.NOT_SERVING,
      );
      expect((await health.check({ service: "coinmesh.rate.v1.RateService" })).status).toBe(
        Status.SERVING,
      );
    } finally {
      await partial.stop();
    }
  });
});

describe("server reflection", () => {
  async function ask(requests: ServerReflectionRequest["messageRequest"][]) {
    const reflection = gateway.client(ServerReflection, "grpc");
    const answers = [];
    async function* send() {
      for (const messageRequest of requests) yield { messageRequest };
    }
    for await (const res of reflection.serverReflectionInfo(send()))
      answers.push(res.messageResponse);
    return answers;
  }

  it("lists the public services, health and reflection", async () => {
    const [list] = await ask([{ case: "listServices", value: "" }]);
    expect(list?.case === "listServicesResponse" && list.value.service.map((s) => s.name)).toEqual([
      "coinmesh.user.v1.UserService",
      "coinmesh.order.v1.AccountService",
      "coinmesh.order.v1.OrderService",
      "coinmesh.rate.v1.RateService",
      "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection",
    ]);
  });

  it("answers a symbol with its file and every file it imports", async () => {
    const [byMethod, unknown] = await ask([
      { case: "fileContainingSymbol", value: "coinmesh.order.v1.OrderService.PlaceOrder" },
      { case: "fileContainingSymbol", value: "no.Such" },
    ]);
    const names =
      byMethod?.case === "fileDescriptorResponse"
        ? byMethod.value.fileDescriptorProto.map(
            (b) => fromBinary(FileDescriptorProtoSchema, b).name,
          )
        : [];
    expect(names).toContain("coinmesh/order/v1/order.proto");
    expect(names).toContain("coinmesh/rate/v1/rate.proto");
    expect(names).toContain("google/protobuf/timestamp.proto");
    expect(unknown?.case).toBe("errorResponse");
  });

  it("is enough for buf curl, over gRPC and Connect, with no schema", async () => {
    const body = JSON.stringify({ base: "BTC", quote: "USD" });
    const target = `${gateway.url}/coinmesh.rate.v1.RateService/GetRate`;
    // Outside the repository, or buf reads the local module instead of asking the server.
    const options = { cwd: tmpdir(), timeout: 20_000 };
    const grpc = await run(
      BUF,
      ["curl", "--protocol", "grpc", "--http2-prior-knowledge", "-d", body, target],
      options,
    );
    expect(JSON.parse(grpc.stdout).rate.base).toBe("BTC");
    const connect = await run(BUF, ["curl", "-d", body, target], options);
    expect(JSON.parse(connect.stdout).rate.quote).toBe("USD");
  });
});

it("ends open streams UNAVAILABLE and stops being ready when it shuts down", async () => {
  const closing = await startTestGateway(backends.addresses);
  const stream = closing
    .client(RateService, "grpc")
    .watchRates({ base: "BTC", quotes: ["USD"] })
    [Symbol.asyncIterator]();
  await stream.next();
  const closed = closing.close(2_000);
  expect(await closing.health.ready()).toBe(false);
  expect(
    await outcome(
      (async () => {
        while (!(await stream.next()).done);
      })(),
    ),
  ).toBe("Unavailable");
  await closed;
  await closing.stop();
});
