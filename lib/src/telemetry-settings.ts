// Kept apart from telemetry.ts so that reading the settings does not load the SDK: with no
// exporter configured, a process never pays for OpenTelemetry at start.

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
