import {
  build,
  decodeFromCompressedBase64,
  encodeIntoCompressedBase64,
  type Histogram,
} from "hdr-histogram-js";

export type { Histogram };

/** Latencies are recorded in microseconds, 1 µs to 2 minutes, 3 significant digits. */
export function createLatencyHistogram(): Histogram {
  return build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 120_000_000,
    numberOfSignificantValueDigits: 3,
  });
}

/** Records a duration given in milliseconds (performance.now() differences). */
export function recordMs(histogram: Histogram, ms: number): void {
  histogram.recordValue(Math.min(120_000_000, Math.max(1, Math.round(ms * 1000))));
}

/** Histograms cross process boundaries as compressed base64 (the HdrHistogram wire format). */
export const encodeHistogram = (h: Histogram): string => encodeIntoCompressedBase64(h);

export function mergeHistograms(encoded: string[]): Histogram {
  const total = createLatencyHistogram();
  for (const one of encoded) total.add(decodeFromCompressedBase64(one));
  return total;
}

/** Percentiles in milliseconds. */
export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

export function summarize(h: Histogram): LatencySummary {
  const ms = (us: number) => Math.round(us) / 1000;
  return {
    count: h.totalCount,
    p50: ms(h.getValueAtPercentile(50)),
    p90: ms(h.getValueAtPercentile(90)),
    p99: ms(h.getValueAtPercentile(99)),
    p999: ms(h.getValueAtPercentile(99.9)),
    max: ms(h.maxValue),
  };
}
