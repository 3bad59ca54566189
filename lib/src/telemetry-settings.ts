// Kept apart from telemetry.ts so that reading the settings does not load the SDK: with no
// exporter configured, a process never pays for OpenTelemetry at start.

export interface TelemetrySettings {
  serviceName: string;
  serviceVersion: string;
  environment: string;
  /** OTLP/HTTP base URL (Jaeger's :4318 or a collector); tracing is off when undefined. */
  endpoint: string | undefined;
  /**
   * Fraction of new traces sampled; a sampled parent is always followed. Undefined when
   * OTEL_TRACES_SAMPLER names another sampler, which the SDK then builds from the environment.
   */
  sampleRatio: number | undefined;
}

/** Reads the standard OTEL_* variables plus ours; the service name defaults to the entry's folder. */
export function telemetrySettings(
  env: Record<string, string | undefined>,
  entry: string,
): TelemetrySettings {
  const fromEntry = /(?:services\/)?([\w-]+)\/src\/main\.ts$/.exec(entry)?.[1];
  const sampler = env.OTEL_TRACES_SAMPLER || "parentbased_traceidratio";
  const ratio = Number(env.OTEL_TRACES_SAMPLER_ARG || "1");
  if (sampler === "parentbased_traceidratio" && !(ratio >= 0 && ratio <= 1))
    throw new Error(
      `OTEL_TRACES_SAMPLER_ARG must be a sampling ratio from 0 to 1, got ${JSON.stringify(env.OTEL_TRACES_SAMPLER_ARG)}`,
    );
  return {
    serviceName: env.OTEL_SERVICE_NAME ?? fromEntry ?? "coinmesh",
    serviceVersion: env.SERVICE_VERSION ?? "local",
    environment: env.DEPLOYMENT_ENVIRONMENT ?? "local",
    endpoint: env.OTEL_EXPORTER_OTLP_ENDPOINT || undefined,
    sampleRatio: sampler === "parentbased_traceidratio" ? ratio : undefined,
  };
}
