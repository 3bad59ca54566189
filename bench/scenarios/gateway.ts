import { randomUUID } from "node:crypto";
import { toBinary } from "@bufbuild/protobuf";
import { GetRateResponseSchema, RateService } from "@coinmesh/proto/rate/v1/rate_pb";
import { createClient, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { mintToken } from "../../gateway/src/token.ts";
import { JWT_SECRET } from "../harness/platform.ts";
import { check, median, pairedRatio, type RunResult, repeated } from "../harness/results.ts";
import {
  type BenchContext,
  closedLoop,
  meter,
  openLoop,
  origin,
  type Scenario,
  withServerCodes,
} from "../harness/scenario.ts";
import { sendOnce } from "../harness/send-once.ts";
import { encodeRequest, PROTOCOLS, type Protocol, rawGrpcRequest } from "../harness/wire.ts";
import { ECHO_PATH } from "../reference/echo-server.ts";
import { GET_RATE, sampleGetRate } from "./get-rate.ts";

/** The real clients a browser or service would use, each speaking one protocol over HTTP/2. */
const TRANSPORTS: Record<Protocol, (baseUrl: string) => Transport> = {
  "connect-json": (baseUrl) =>
    createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: false }),
  "connect-proto": (baseUrl) =>
    createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true }),
  "grpc-web": (baseUrl) => createGrpcWebTransport({ baseUrl, httpVersion: "2" }),
  grpc: (baseUrl) => createGrpcTransport({ baseUrl }),
};

export const gatewayScenario: Scenario = {
  name: "gateway",
  title: "GetRate through the gateway in each protocol, against echo and the direct call",
  expectedS: 200,
  async run(ctx: BenchContext) {
    const { platform } = ctx;
    const gateway = await platform.gateway();
    const [echo, rate] = await Promise.all([platform.echo(), platform.rate()]);
    // A signed-in caller: the token is verified (then cached) like every real client's.
    const token = await mintToken({ sub: randomUUID(), secret: JWT_SECRET });
    const auth = { authorization: `Bearer ${token}` };
    const notes: string[] = [];

    const requests = {} as Record<Protocol, ReturnType<typeof encodeRequest>>;
    for (const protocol of PROTOCOLS) {
      const client = createClient(RateService, TRANSPORTS[protocol](origin(gateway)));
      const response = await client.getRate(GET_RATE, { headers: auth });
      if (!response.rate?.price) throw new Error(`${protocol}: GetRate without a price`);
      requests[protocol] = encodeRequest(protocol, RateService.method.getRate, GET_RATE, auth);
      const status = await sendOnce(origin(gateway), requests[protocol]);
      if (status !== "OK") throw new Error(`${protocol}: the load payload earns ${status}`);
      notes.push(
        `${protocol}: a connect-es client got BTC→USD ${response.rate.price}; the h2load payload (${requests[protocol].body.length} bytes) earns status ${status}.`,
      );
    }
    const sample = await sampleGetRate(rate.address);
    const echoRequest = rawGrpcRequest(ECHO_PATH, toBinary(GetRateResponseSchema, sample));
    const direct = encodeRequest("grpc", RateService.method.getRate, GET_RATE);
    const processes = meter(gateway, rate);

    const echoRuns: RunResult[] = [];
    const closed = Object.fromEntries(PROTOCOLS.map((p) => [p, [] as RunResult[]])) as Record<
      Protocol,
      RunResult[]
    >;
    for (let i = 0; i < ctx.repetitions; i++) {
      echoRuns.push(await closedLoop(ctx, "echo", origin(echo), echoRequest, meter(echo)));
      for (const protocol of PROTOCOLS) {
        closed[protocol].push(
          await withServerCodes(gateway, "GetRate", () =>
            closedLoop(ctx, `gateway ${protocol}`, origin(gateway), requests[protocol], processes),
          ),
        );
      }
    }

    // Added latency at half of each protocol's capacity: direct gRPC and gateway at one rate.
    const open = {} as Record<Protocol, { direct: RunResult[]; gateway: RunResult[]; rps: number }>;
    for (const protocol of PROTOCOLS) {
      const capacity = median(closed[protocol].map((r) => r.throughput));
      const rps = Math.min(ctx.openLoopMaxRps, capacity / 2);
      open[protocol] = { direct: [], gateway: [], rps };
      for (let i = 0; i < ctx.repetitions; i++) {
        open[protocol].direct.push(
          await openLoop(ctx, "GetRate direct", origin(rate), [direct], rps, meter(rate)),
        );
        open[protocol].gateway.push(
          await openLoop(
            ctx,
            `gateway ${protocol}`,
            origin(gateway),
            [requests[protocol]],
            rps,
            processes,
          ),
        );
      }
    }

    const echoRps = median(echoRuns.map((r) => r.throughput));
    const targets = PROTOCOLS.flatMap((protocol) => {
      const ratio = pairedRatio(
        closed[protocol].map((r) => r.throughput),
        echoRuns.map((r) => r.throughput),
      );
      const { direct: d, gateway: g, rps } = open[protocol];
      const added = median(g.map((r, i) => r.latency.p50 - (d[i] as RunResult).latency.p50));
      return [
        check(
          `Gateway ${protocol}: ≥ 25% of raw echo throughput`,
          `${Math.round(median(closed[protocol].map((r) => r.throughput)))}/s vs echo ${Math.round(echoRps)}/s`,
          ratio,
          ">=",
          0.25,
          "see the gateway notes",
        ),
        check(
          `Gateway ${protocol}: added p50 ≤ 1 ms against the direct call at half capacity`,
          `p50 ${median(g.map((r) => r.latency.p50)).toFixed(2)} ms vs direct ${median(d.map((r) => r.latency.p50)).toFixed(2)} ms at ${Math.round(rps)}/s (ms added)`,
          added,
          "<=",
          1,
          "see the gateway notes",
        ),
      ];
    });
    return {
      runs: [
        repeated("echo (reference)", echoRuns),
        ...PROTOCOLS.map((p) => repeated(`gateway ${p}`, closed[p])),
        ...PROTOCOLS.flatMap((p) => [
          repeated(`GetRate direct (for ${p})`, open[p].direct),
          repeated(`gateway ${p}`, open[p].gateway),
        ]),
      ],
      targets,
      notes: [
        ...notes,
        "The gateway runs with its per-subject rate limit off (RATE_LIMIT_PER_SECOND=0); every call carries a valid HS256 token. All four protocols over HTTP/2 (h2c), as h2load speaks it.",
        "Added p50 pairs each gateway run with the direct run just before it, at the same arrival rate (half the protocol's closed-loop throughput, at most the generator's ceiling), and takes the median of the differences.",
      ],
    };
  },
};
