// Loaded with `node --import ./lib/src/telemetry-register.ts <entry>` so that instrumentation
// hooks are in place before grpc-js, pg or ioredis are imported (required under ESM).
import { register } from "node:module";
import { startTelemetry, telemetrySettings } from "./telemetry.ts";

const settings = telemetrySettings(process.env, process.argv[1] ?? "");
if (settings.endpoint) {
  register("@opentelemetry/instrumentation/hook.mjs", import.meta.url);
  startTelemetry(settings);
}
