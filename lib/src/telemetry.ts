import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { GrpcInstrumentation } from "@opentelemetry/instrumentation-grpc";
import { IORedisInstrumentation } from "@opentelemetry/instrumentation-ioredis";
import { PgInstrumentation } from "@opentelemetry/instrumentation-pg";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { NodeSDK } from "@opentelemetry/sdk-node";
import { ParentBasedSampler, TraceIdRatioBasedSampler } from "@opentelemetry/sdk-trace";
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from "@opentelemetry/semantic-conventions";

export interface TelemetrySettings {
  serviceName: string;
  serviceVersion: string;
  environment: string;
  /** OTLP/HTTP base URL (Jaeger's :4318 or a collector); tracing is off when undefined. */
  endpoint: string | undefined;
  /** Fraction of new traces sampled; a sampled parent is always followed. */
  sampleRatio: number;
}

/** Reads the standard OTEL_* variables plus ours; the service name defaults to the entry's folder. */
export function telemetrySettings(
  env: Record<string, string | undefined>,
  entry: string,
): TelemetrySettings {
  const fromEntry = /(?:services\/)?([\w-]+)\/src\/main\.ts$/.exec(entry)?.[1];
  const ratio = Number(env.OTEL_TRACES_SAMPLER_ARG ?? "1");
  return {
    serviceName: env.OTEL_SERVICE_NAME ?? fromEntry ?? "coinmesh",
    serviceVersion: env.SERVICE_VERSION ?? "local",
    environment: env.DEPLOYMENT_ENVIRONMENT ?? "local",
    endpoint: env.OTEL_EXPORTER_OTLP_ENDPOINT || undefined,
    sampleRatio: Number.isFinite(ratio) ? Math.min(Math.max(ratio, 0), 1) : 1,
  };
}

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
    sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(settings.sampleRatio) }),
    instrumentations: [
      new GrpcInstrumentation(),
      new PgInstrumentation({ requireParentSpan: true }),
      new IORedisInstrumentation({ requireParentSpan: true }),
    ],
  });
  sdk.start();
  return sdk;
}
