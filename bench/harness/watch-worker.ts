// Holds many WatchRates streams open and notes when each message arrives. Started by
// watch-subscribers.ts; talks over IPC.
import { createServiceClient } from "@coinmesh/lib/grpc-client";
import { RateService } from "@coinmesh/proto/rate/v1/rate_pb";

export interface WatchPlan {
  address: string;
  streams: number;
  base: string;
  quotes: string[];
}

/** Per stream: [price of the first quote, arrival as epoch ms with sub-ms precision] per message. */
export type WatchArrivals = [string, number][][];

const now = () => performance.timeOrigin + performance.now();

async function watchAll(plan: WatchPlan) {
  // One grpc-js channel: every stream of this process shares one HTTP/2 connection.
  const channel = createServiceClient(RateService, plan.address);
  const controller = new AbortController();
  const arrivals: WatchArrivals = Array.from({ length: plan.streams }, () => []);
  let ready = 0;
  let failures = 0;
  let announce: () => void = () => {};
  const allReady = new Promise<void>((resolve) => {
    announce = resolve;
  });
  const streams = arrivals.map(async (mine) => {
    try {
      const stream = channel.client.watchRates(
        { base: plan.base, quotes: plan.quotes },
        { signal: controller.signal },
      );
      for await (const message of stream) {
        mine.push([message.rates[0]?.price ?? "", now()]);
        if (mine.length === 1 && ++ready === plan.streams) announce();
      }
    } catch {
      if (!controller.signal.aborted) failures++;
    }
  });
  return {
    allReady,
    async finish() {
      controller.abort();
      await Promise.all(streams);
      channel.close();
      return { arrivals, failures };
    },
  };
}

if (import.meta.main) {
  process.send?.("ready");
  process.once("message", async (plan: WatchPlan) => {
    const watching = await watchAll(plan);
    await watching.allReady;
    process.send?.("subscribed");
    process.once("message", async () => {
      process.send?.(await watching.finish(), () => process.exit(0));
    });
  });
}
