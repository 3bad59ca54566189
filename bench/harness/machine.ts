import { execFileSync } from "node:child_process";
import { availableParallelism, cpus, loadavg, totalmem } from "node:os";
import type { MachineFacts } from "./results.ts";

function version(command: string, pattern: RegExp): string {
  try {
    const out = execFileSync(command, ["--version"], { encoding: "utf8", stdio: "pipe" });
    return pattern.exec(out)?.[1] ?? out.trim();
  } catch {
    return "missing";
  }
}

/** What a reader needs to judge the figures: cores, CPU, memory, load, tool versions. */
export function machineFacts(): MachineFacts {
  return {
    nproc: availableParallelism(),
    cpuModel: cpus()[0]?.model.trim() ?? "unknown",
    memoryGb: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    tools: {
      h2load: version("h2load", /nghttp2\/([\d.]+)/),
      pgbench: version("pgbench", /([\d.]+)/),
      "redis-benchmark": version("redis-benchmark", /([\d.]+)/),
    },
    loadBefore: loadavg(),
    loadAfter: [],
  };
}
