import { expect, it } from "vitest";
import { prefersOpenMetrics } from "../src/metrics.ts";

it.each([
  // Prometheus 2.x and 3.x scrapes: OpenMetrics first.
  [
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    true,
  ],
  [
    "application/openmetrics-text;version=1.0.0;q=0.6,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,*/*;q=0.2",
    true,
  ],
  ["application/openmetrics-text", true],
  // curl, a browser, a scraper that only knows the text format.
  [undefined, false],
  ["*/*", false],
  ["text/plain;version=0.0.4", false],
  ["text/plain, application/openmetrics-text;q=0.5", false],
  ["application/openmetrics-text;q=0", false],
])("Accept %s → OpenMetrics: %s", (accept, expected) => {
  expect(prefersOpenMetrics(accept)).toBe(expected);
});
