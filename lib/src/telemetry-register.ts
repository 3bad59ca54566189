// Loaded with `node --import ./lib/src/telemetry-register.ts <entry>` so that instrumentation
// hooks are in place before grpc-js, pg or ioredis are imported (required under ESM). With no
// exporter configured nothing else is loaded.
import { register } from "node:module";
import { telemetrySettings } from "./telemetry-settings.ts";

const settings = telemetrySettings(process.env, process.argv[1] ?? "");
if (settings.endpoint) {
  register("@opentelemetry/instrumentation/hook.mjs", import.meta.url);
  const { startTelemetry } = await import("./telemetry.ts");
  startTelemetry(settings);
}
