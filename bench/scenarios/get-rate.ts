import { toBinary } from "@bufbuild/protobuf";
import { GetRateResponseSchema, RateService, RateSource } from "@coinmesh/proto/rate/v1/rate_pb";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { check, median, pairedRatio, repeated } from "../harness/results.ts";
import {
  type BenchContext,
  closedLoop,
  meter,
  openLoop,
  origin,
  type Scenario,
  withServerCodes,
} from "../harness/scenario.ts";
import { encodeRequest, rawGrpcRequest } from "../harness/wire.ts";
import { ECHO_PATH } from "../reference/echo-server.ts";

export const GET_RATE = { base: "BTC", quote: "USD" };

const sourceName = (source: number | undefined) =>
  Object.entries(RateSource).find(([, value]) => value === source)?.[0] ?? "UNKNOWN";

/** One real-client call first: h2load would count a gRPC error as a success. */
export async function sampleGetRate(address: string) {
  const client = createClient(RateService, createGrpcTransport({ baseUrl: `http://${address}` }));
  const response = await client.getRate(GET_RATE);
  if (!response.rate?.price) throw new Error("GetRate answered without a price");
  return response;
}

export const getRateScenario: Scenario = {
  name: "get-rate",
  title: "Cached GetRate, direct gRPC, against the raw grpc-js echo",
  expectedS: 70,
  async run(ctx: BenchContext) {
    const echo = await ctx.platform.echo();
    const rate = await ctx.platform.rate();
    const sample = await sampleGetRate(rate.address);
    // The echo carries a real GetRate response both ways: at least GetRate's bytes on the wire.
    const echoRequest = rawGrpcRequest(ECHO_PATH, toBinary(GetRateResponseSchema, sample));
    const rateRequest = encodeRequest("grpc", RateService.method.getRate, GET_RATE);

    const echoClosed = [];
    const rateClosed = [];
    for (let i = 0; i < ctx.repetitions; i++) {
      echoClosed.push(await closedLoop(ctx, "echo", origin(echo), echoRequest, meter(echo)));
      rateClosed.push(
        await withServerCodes(rate, "GetRate", () =>
          closedLoop(ctx, "GetRate", origin(rate), rateRequest, meter(rate)),
        ),
      );
    }
    const throughputRatio = pairedRatio(
      rateClosed.map((r) => r.throughput),
      echoClosed.map((r) => r.throughput),
    );

    // Same arrival rate for both: half of what GetRate sustained, within the generator's reach.
    const rps = Math.min(ctx.openLoopMaxRps, median(rateClosed.map((r) => r.throughput)) / 2);
    const echoOpen = [];
    const rateOpen = [];
    for (let i = 0; i < ctx.repetitions; i++) {
      echoOpen.push(await openLoop(ctx, "echo", origin(echo), [echoRequest], rps, meter(echo)));
      rateOpen.push(
        await withServerCodes(rate, "GetRate", () =>
          openLoop(ctx, "GetRate", origin(rate), [rateRequest], rps, meter(rate)),
        ),
      );
    }
    const p99Ratio = pairedRatio(
      rateOpen.map((r) => r.latency.p99),
      echoOpen.map((r) => r.latency.p99),
    );
    const echoRps = median(echoClosed.map((r) => r.throughput));
    const rateRps = median(rateClosed.map((r) => r.throughput));
    return {
      runs: [
        repeated("echo (reference)", echoClosed),
        repeated("GetRate direct", rateClosed),
        repeated("echo (reference)", echoOpen),
        repeated("GetRate direct", rateOpen),
      ],
      targets: [
        check(
          "Cached GetRate, direct gRPC: ≥ 70% of raw echo throughput",
          `${Math.round(rateRps)}/s vs echo ${Math.round(echoRps)}/s`,
          throughputRatio,
          ">=",
          0.7,
          "see the GetRate notes",
        ),
        check(
          "Cached GetRate: p99 ≤ 2× echo's at the same rate",
          `p99 ${median(rateOpen.map((r) => r.latency.p99)).toFixed(2)} ms vs echo ${median(echoOpen.map((r) => r.latency.p99)).toFixed(2)} ms at ${Math.round(rps)}/s`,
          p99Ratio,
          "<=",
          2,
          "see the GetRate notes",
        ),
      ],
      notes: [
        `Sample call: BTC→USD ${sample.rate?.price} (source ${sourceName(sample.rate?.source)}); the echo returns that response's ${toBinary(GetRateResponseSchema, sample).length} bytes as its request and response.`,
        `Ratios pair each GetRate run with the echo run just before it and take the median of the ${ctx.repetitions} pairs.`,
      ],
    };
  },
};
