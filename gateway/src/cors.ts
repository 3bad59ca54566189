import type { IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import { cors } from "@connectrpc/connect";

// Besides the protocols' own headers: the token, trace context, request id and canary pin.
const ALLOWED_HEADERS = [
  ...cors.allowedHeaders,
  "Authorization",
  "Traceparent",
  "Tracestate",
  "X-Request-Id",
  "X-Canary",
].join(", ");
const EXPOSED_HEADERS = cors.exposedHeaders.join(", ");
const PREFLIGHT_MAX_AGE_S = "7200";

/**
 * CORS for the configured browser origins ("*" for any). Returns true when it answered the
 * request itself (a preflight); otherwise it only adds headers to the response to come.
 */
export function createCors(origins: string[]) {
  const anyOrigin = origins.includes("*");
  const allowed = new Set(origins);
  // With a list of origins, every answer depends on the request's Origin (an allowed one gets
  // CORS headers), so a cache in between must key on it: a cached Connect GET answered to a
  // request without Origin would otherwise be served to a browser without its CORS headers.
  const varies = origins.length > 0 && !anyOrigin;
  return function applyCors(
    req: IncomingMessage | Http2ServerRequest,
    res: ServerResponse | Http2ServerResponse,
  ): boolean {
    const origin = req.headers.origin;
    if (varies) res.setHeader("Vary", "Origin");
    if (origin === undefined || !(anyOrigin || allowed.has(origin))) return false;
    res.setHeader("Access-Control-Allow-Origin", anyOrigin ? "*" : origin);
    if (req.method === "OPTIONS" && req.headers["access-control-request-method"]) {
      (res as ServerResponse).writeHead(204, {
        "Access-Control-Allow-Methods": cors.allowedMethods.join(", "),
        "Access-Control-Allow-Headers": ALLOWED_HEADERS,
        "Access-Control-Max-Age": PREFLIGHT_MAX_AGE_S,
      });
      res.end();
      return true;
    }
    res.setHeader("Access-Control-Expose-Headers", EXPOSED_HEADERS);
    return false;
  };
}
