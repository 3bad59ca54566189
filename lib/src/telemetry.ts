import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { GrpcInstrumentation } from "@opentelemetry/instrumentation-grpc";
import { IORedisInstrumentation } from "@opentelemetry/instrumentation-ioredis";
import { PgInstrumentation } from "@opentelemetry/instrumentation-pg";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { NodeSDK } from "@opentelemetry/sdk-node";
import { ParentBasedSampler, TraceIdRatioBasedSampler } from "@opentelemetry/sdk-trace";
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from "@opentelemetry/semantic-conventions";
import type { TelemetrySettings } from "./telemetry-settings.ts";

/**
 * Starts the OpenTelemetry SDK: grpc-js, pg and ioredis spans, W3C trace context, OTLP/HTTP
 * export. Returns undefined (and costs nothing) when no endpoint is configured.
 */
export function startTelemetry(settings: TelemetrySettings): NodeSDK | undefined {
  if (!settings.endpoint) return undefined;
  const sdk = new NodeSDK({
    resource: resourceFromAttributes({
      [ATTR_SERVICE_NAME]: settings.serviceName,
      [ATTR_SERVICE_VERSION]: settings.serviceVersion,
      "deployment.environment.name": settings.environment,
      "deployment.environment": settings.environment,
    }),
    autoDetectResources: false,
    traceExporter: new OTLPTraceExporter({
      url: `${settings.endpoint.replace(/\/$/, "")}/v1/traces`,
    }),
    sampler:
      settings.sampleRatio === undefined
        ? undefined
        : new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(settings.sampleRatio) }),
    instrumentations: [
      new GrpcInstrumentation(),
      new PgInstrumentation({ requireParentSpan: true }),
      new IORedisInstrumentation({ requireParentSpan: true }),
    ],
  });
  sdk.start();
  return sdk;
}
