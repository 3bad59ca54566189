import { Counter, Gauge, type Registry } from "prom-client";

/**
 * Domain metrics built on the registry from createMetrics(), so services need not know
 * prom-client. Label values are fixed up front: the returned functions are bound children,
 * cheap enough for a hot path.
 */
export function labelledCounter<V extends string>(
  registry: Registry,
  config: { name: string; help: string; label: string; values: readonly V[] },
): Record<V, () => void> {
  const counter = new Counter({
    name: config.name,
    help: config.help,
    labelNames: [config.label],
    registers: [registry],
  });
  const out = {} as Record<V, () => void>;
  for (const value of config.values) {
    const child = counter.labels({ [config.label]: value });
    // Touch every child so each series is exported from the start (rate() needs a zero).
    child.inc(0);
    out[value] = () => child.inc();
  }
  return out;
}

/** A gauge a process moves up and down, e.g. open streams. */
export function upDownGauge(registry: Registry, config: { name: string; help: string }) {
  const gauge = new Gauge({ name: config.name, help: config.help, registers: [registry] });
  gauge.set(0);
  return { inc: () => gauge.inc(), dec: () => gauge.dec() };
}

/** A gauge read at scrape time; undefined leaves it unset (no sample). */
export function observedGauge(
  registry: Registry,
  config: { name: string; help: string; read: () => number | undefined },
): void {
  new Gauge({
    name: config.name,
    help: config.help,
    registers: [registry],
    collect() {
      const value = config.read();
      if (value === undefined) this.reset();
      else this.set(value);
    },
  });
}
