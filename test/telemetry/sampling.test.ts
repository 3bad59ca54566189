import { randomBytes } from "node:crypto";
import { type SpawnedRunnable, spawnRunnable } from "@coinmesh/lib/process-testing";
import { telemetrySettings } from "@coinmesh/lib/telemetry-settings";
import { RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type FakeUpstream, startFakeUpstream } from "../../services/rate/test/fake-upstream.ts";
import { startOtlpReceiver } from "../support/otlp-receiver.ts";

// One process is enough to show what the sampler decides: the rate service, on its snapshot.
let receiver: Awaited<ReturnType<typeof startOtlpReceiver>>;
let upstream: FakeUpstream;
let rate: SpawnedRunnable;
let address: string;
let alwaysOn: SpawnedRunnable;
let alwaysOnAddress: string;

beforeAll(async () => {
  [receiver, upstream] = await Promise.all([startOtlpReceiver(), startFakeUpstream()]);
  rate = spawnRunnable("services/rate/src/main.ts", {
    PORT: "0",
    METRICS_PORT: "0",
    RATES_UPSTREAM_URL: upstream.url,
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
    OTEL_TRACES_SAMPLER_ARG: "0",
    OTEL_BSP_SCHEDULE_DELAY: "100",
  });
  const ready = await rate.waitForLog((l) => l.msg === "rate service SERVING");
  address = `http://127.0.0.1:${ready.port}`;
  // OTEL_TRACES_SAMPLER names another sampler: the SDK's own, the ratio no longer applies.
  alwaysOn = spawnRunnable("services/rate/src/main.ts", {
    PORT: "0",
    METRICS_PORT: "0",
    RATES_UPSTREAM_URL: upstream.url,
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
    OTEL_SERVICE_NAME: "rate-always-on",
    OTEL_TRACES_SAMPLER: "always_on",
    OTEL_TRACES_SAMPLER_ARG: "0",
    OTEL_BSP_SCHEDULE_DELAY: "100",
  });
  const alwaysOnReady = await alwaysOn.waitForLog((l) => l.msg === "rate service SERVING");
  alwaysOnAddress = `http://127.0.0.1:${alwaysOnReady.port}`;
}, 60_000);

afterAll(async () => {
  rate?.child.kill("SIGTERM");
  alwaysOn?.child.kill("SIGTERM");
  await Promise.all([rate?.exited, alwaysOn?.exited]);
  await Promise.all([upstream?.close(), receiver?.close()]);
});

const traceparent = (flags: "00" | "01") => {
  const traceId = randomBytes(16).toString("hex");
  return { traceId, header: `00-${traceId}-${randomBytes(8).toString("hex")}-${flags}` };
};

it("with OTEL_TRACES_SAMPLER_ARG=0 starts no trace of its own but follows a sampled caller's", async () => {
  const rates = createClient(RateService, createGrpcTransport({ baseUrl: address }));
  const getRate = (headers: Record<string, string> = {}) =>
    rates.getRate({ base: "BTC", quote: "USD" }, { headers });
  await getRate(); // a new root trace: ratio 0 leaves it out
  await getRate({ traceparent: traceparent("00").header }); // the caller did not sample
  const sampled = traceparent("01");
  await getRate({ traceparent: sampled.header });

  await receiver.waitFor((spans) => spans.some((s) => s.traceId === sampled.traceId));
  // Spans are exported in the order they ended: the earlier calls' would have come first.
  expect(receiver.spans.map((s) => [s.service, s.name, s.traceId])).toEqual([
    ["rate", "grpc.coinmesh.rate.v1.RateService/GetRate", sampled.traceId],
  ]);
});

it("leaves the choice to the SDK when OTEL_TRACES_SAMPLER names a sampler", async () => {
  const rates = createClient(RateService, createGrpcTransport({ baseUrl: alwaysOnAddress }));
  await rates.getRate({ base: "BTC", quote: "EUR" }); // a new root trace, kept by always_on
  await receiver.waitFor((spans) => spans.some((s) => s.service === "rate-always-on"));
  const roots = receiver.spans.filter((s) => s.service === "rate-always-on");
  expect(roots.map((s) => s.name)).toContain("grpc.coinmesh.rate.v1.RateService/GetRate");
});

it("refuses a sampling ratio that is not one, instead of guessing", () => {
  for (const arg of ["abc", "-0.1", "1.5"])
    expect(() => telemetrySettings({ OTEL_TRACES_SAMPLER_ARG: arg }, "rate/src/main.ts")).toThrow(
      `OTEL_TRACES_SAMPLER_ARG must be a sampling ratio from 0 to 1, got "${arg}"`,
    );
  expect(telemetrySettings({ OTEL_TRACES_SAMPLER_ARG: "0.25" }, "x").sampleRatio).toBe(0.25);
  expect(telemetrySettings({}, "x").sampleRatio).toBe(1);
});
