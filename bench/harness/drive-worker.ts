// One load-generating process: raw node:http2 with pre-encoded requests, so that the generator
// spends far less per call than the server it loads. Started by drive.ts; talks over IPC.
import http2 from "node:http2";
import { connect as tcpConnect } from "node:net";
import { createLatencyHistogram, encodeHistogram, recordMs } from "./histogram.ts";
import { type Protocol, statusOf } from "./wire.ts";

export interface DrivePlan {
  mode: "open" | "closed";
  /** e.g. http://127.0.0.1:8080 */
  origin: string;
  protocol: Protocol;
  path: string;
  /** Requests used round-robin: each its own headers (e.g. a token) and base64 body. */
  variants: { headers: Record<string, string>; body: string }[];
  /** A marker inside the bodies replaced per request by a unique string of the same length. */
  uniqueToken?: string;
  /** Open loop: requests per second from this worker. */
  rate?: number;
  /** Closed loop: requests kept in flight by this worker. */
  concurrency?: number;
  connections: number;
  warmupMs: number;
  durationMs: number;
  /** A request still unanswered this long after it was sent counts as TIMEOUT. */
  timeoutMs: number;
  /** The caller's deadline: an answer later than this after the scheduled time counts as LATE. */
  deadlineMs?: number;
  /** When every worker begins (warm-up first), as epoch ms, so that workers start together. */
  startAtEpochMs: number;
  /** Distinguishes the unique strings of workers running side by side. */
  workerId: number;
  /** Open-loop phase offset in ms, so that workers do not send in lockstep. */
  phaseMs?: number;
}

export interface DriveWorkerResult {
  /** Latency of the requests scheduled in the measured window, from scheduled send time. */
  latency: string;
  /** The same latencies split by status, e.g. to tell fast rejections from slow successes. */
  latencyByStatus: Record<string, string>;
  /** How late requests left against their schedule (the generator's own lag). */
  sendLag: string;
  /** Status name → count, for requests scheduled in the measured window. */
  statuses: Record<string, number>;
  /** Requests scheduled in the measured window. */
  scheduled: number;
  maxInFlight: number;
}

interface Template {
  headers: Record<string, string>;
  body: Buffer;
  tokenOffsets: number[];
}

function templates(plan: DrivePlan): Template[] {
  return plan.variants.map((variant) => {
    const headers = { ":method": "POST", ":path": plan.path, ...variant.headers };
    const body = Buffer.from(variant.body, "base64");
    const tokenOffsets: number[] = [];
    if (plan.uniqueToken) {
      for (
        let i = body.indexOf(plan.uniqueToken);
        i >= 0;
        i = body.indexOf(plan.uniqueToken, i + 1)
      )
        tokenOffsets.push(i);
    }
    return { headers, body, tokenOffsets };
  });
}

export async function drive(plan: DrivePlan): Promise<DriveWorkerResult> {
  const connect = () => {
    const { hostname, port } = new URL(plan.origin);
    const session = http2.connect(plan.origin, {
      // Small requests must not wait for Nagle's algorithm (40 ms with delayed ACKs).
      createConnection: () => tcpConnect({ host: hostname, port: Number(port), noDelay: true }),
    });
    session.on("error", () => {});
    return session;
  };
  const sessions = Array.from({ length: plan.connections }, connect);
  // A session the server closed (GOAWAY, reset) is replaced, as a real client would.
  const sessionFor = (i: number) => {
    const index = i % sessions.length;
    let session = sessions[index] as http2.ClientHttp2Session;
    if (session.closed || session.destroyed) {
      session = connect();
      sessions[index] = session;
    }
    return session;
  };
  const bodies = templates(plan);
  const tokenLength = plan.uniqueToken?.length ?? 0;
  const latency = createLatencyHistogram();
  const byStatus = new Map<string, ReturnType<typeof createLatencyHistogram>>();
  const sendLag = createLatencyHistogram();
  const statuses: Record<string, number> = {};
  let sequence = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  let scheduled = 0;

  const start = performance.now() + (plan.startAtEpochMs - Date.now()) + (plan.phaseMs ?? 0);
  const windowStart = start + plan.warmupMs;
  const windowEnd = windowStart + plan.durationMs;

  function bodyOf(template: Template): Buffer {
    if (template.tokenOffsets.length === 0) return template.body;
    const body = Buffer.from(template.body);
    const unique = `${plan.workerId.toString(36)}x${sequence.toString(36)}`.padStart(
      tokenLength,
      "0",
    );
    for (const offset of template.tokenOffsets) body.write(unique, offset, tokenLength);
    return body;
  }

  // One sweep for every deadline instead of a timer per request: the generator must stay cheap.
  const active = new Set<{ deadline: number; cancel: () => void }>();
  const sweeper = setInterval(() => {
    const now = performance.now();
    for (const entry of active) if (entry.deadline <= now) entry.cancel();
  }, 50);
  let drained: (() => void) | undefined;

  /** Sends one request; calls done once it is answered or given up on. */
  function send(scheduledAt: number, done?: () => void): void {
    const measured = scheduledAt >= windowStart && scheduledAt < windowEnd;
    const sentAt = performance.now();
    if (measured) {
      scheduled++;
      recordMs(sendLag, sentAt - scheduledAt);
    }
    inFlight++;
    if (inFlight > maxInFlight) maxInFlight = inFlight;
    let httpStatus = 0;
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders | undefined;
    const chunks: Buffer[] = [];
    let finished = false;
    const entry = { deadline: sentAt + plan.timeoutMs, cancel: () => {} };
    const finish = (status: string) => {
      if (finished) return;
      finished = true;
      active.delete(entry);
      inFlight--;
      if (measured) {
        const ms = performance.now() - scheduledAt;
        // Past the caller's deadline an answer is useless, whatever it says.
        const outcome = plan.deadlineMs !== undefined && ms > plan.deadlineMs ? "LATE" : status;
        statuses[outcome] = (statuses[outcome] ?? 0) + 1;
        recordMs(latency, ms);
        let own = byStatus.get(outcome);
        if (!own) {
          own = createLatencyHistogram();
          byStatus.set(outcome, own);
        }
        recordMs(own, ms);
      }
      done?.();
      if (inFlight === 0) drained?.();
    };
    const template = bodies[sequence % bodies.length] as Template;
    sequence++;
    let stream: http2.ClientHttp2Stream;
    try {
      stream = sessionFor(sequence).request(template.headers);
    } catch {
      // Asynchronously, so a closed-loop slot on a dead connection does not recurse.
      setImmediate(() => finish("CONNECTION_ERROR"));
      return;
    }
    entry.cancel = () => {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      finish("TIMEOUT");
    };
    active.add(entry);
    stream.on("response", (h) => {
      headers = h;
      httpStatus = Number(h[":status"]);
    });
    stream.on("trailers", (t) => {
      trailers = t;
    });
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("close", () => {
      if (httpStatus === 0) return finish("CONNECTION_ERROR");
      if (stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR) return finish("STREAM_ERROR");
      const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
      finish(statusOf(plan.protocol, { httpStatus, headers, trailers, body }));
    });
    stream.on("error", () => {});
    stream.end(bodyOf(template));
  }

  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

  await sleep(start - performance.now());
  if (plan.mode === "open") {
    // Requests go out at their scheduled times whatever happens to earlier ones: a stalled
    // server shows up as latency (measured from the schedule) instead of as fewer requests.
    const interval = 1000 / (plan.rate ?? 1);
    let sentWithoutYield = 0;
    for (let i = 0; ; i++) {
      const at = start + i * interval;
      if (at >= windowEnd) break;
      if (at > performance.now()) {
        await sleep(at - performance.now());
        sentWithoutYield = 0;
      } else if (++sentWithoutYield > 64) {
        // Behind schedule: still let responses in, or lag would feed on itself.
        await new Promise((resolve) => setImmediate(resolve));
        sentWithoutYield = 0;
      }
      send(at);
    }
  } else {
    // Each slot sends its next request as soon as the previous one is answered.
    const next = () => {
      if (performance.now() < windowEnd) send(performance.now(), next);
    };
    for (let i = 0; i < (plan.concurrency ?? 1); i++) next();
    await sleep(windowEnd - performance.now());
  }
  if (inFlight > 0) await new Promise<void>((resolve) => (drained = resolve));
  clearInterval(sweeper);
  for (const session of sessions) session.close();
  return {
    latency: encodeHistogram(latency),
    latencyByStatus: Object.fromEntries([...byStatus].map(([k, h]) => [k, encodeHistogram(h)])),
    sendLag: encodeHistogram(sendLag),
    statuses,
    scheduled,
    maxInFlight,
  };
}

if (import.meta.main) {
  process.send?.("ready");
  process.once("message", (plan: DrivePlan) => {
    drive(plan).then(
      (result) => process.send?.(result, () => process.exit(0)),
      (err: unknown) => {
        console.error(err);
        process.exit(1);
      },
    );
  });
}
