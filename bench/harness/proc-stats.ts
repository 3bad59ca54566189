import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";

const clockTicks = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

export interface ProcSample {
  /** utime + stime of the process (all threads), in seconds. */
  cpuSeconds: number;
  /** Peak resident set since start or since the last resetPeakRss (VmHWM), in MB. */
  peakRssMb: number;
  at: number;
}

/** Reads /proc/<pid>; undefined once the process is gone. */
export function sampleProcess(pid: number): ProcSample | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name may contain spaces; fields are counted after its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(fields[11]) + Number(fields[12]);
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const hwm = /VmHWM:\s+(\d+) kB/.exec(status)?.[1];
    return {
      cpuSeconds: ticks / clockTicks,
      peakRssMb: Number(hwm ?? 0) / 1024,
      at: performance.now(),
    };
  } catch {
    return undefined;
  }
}

/** Starts a new peak-RSS window (writing 5 to clear_refs resets VmHWM); false if not permitted. */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/**
 * CPU time of the whole machine (every process, ours or not), in seconds: busy, and the part of
 * it the hypervisor gave to other virtual machines (steal).
 */
export function machineSeconds(): { busy: number; steal: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "";
  // cpu user nice system idle iowait irq softirq steal ...: all but idle and iowait is busy.
  const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = ticks.reduce((a, b) => a + b, 0);
  return {
    busy: (total - (ticks[3] ?? 0) - (ticks[4] ?? 0)) / clockTicks,
    steal: (ticks[7] ?? 0) / clockTicks,
  };
}

export interface ProcessUsage {
  /** Average cores used over the window (1 = one core fully busy). */
  cpuCores: number;
  cpuSeconds: number;
  peakRssMb: number;
}

/** CPU and peak RSS of named processes over a window: call start(), then stop(). */
export function createUsageMeter(pids: Record<string, number>) {
  let before: Record<string, ProcSample | undefined> = {};
  let machineBefore = { busy: 0, steal: 0, at: 0 };
  return {
    start() {
      before = {};
      for (const [name, pid] of Object.entries(pids)) {
        resetPeakRss(pid);
        before[name] = sampleProcess(pid);
      }
      machineBefore = { ...machineSeconds(), at: performance.now() };
    },
    stop(): Record<string, ProcessUsage> {
      const usage: Record<string, ProcessUsage> = {};
      // Everything that ran, other people's work included: how much CPU the run really had.
      const now = machineSeconds();
      const wall = (performance.now() - machineBefore.at) / 1000;
      const cores = (seconds: number) => (wall > 0 ? seconds / wall : 0);
      const busy = now.busy - machineBefore.busy;
      const steal = now.steal - machineBefore.steal;
      usage.machine = { cpuSeconds: busy, cpuCores: cores(busy), peakRssMb: 0 };
      if (cores(steal) >= 0.01)
        usage.steal = { cpuSeconds: steal, cpuCores: cores(steal), peakRssMb: 0 };
      for (const [name, pid] of Object.entries(pids)) {
        const a = before[name];
        const b = sampleProcess(pid);
        if (!a || !b) continue;
        const cpuSeconds = b.cpuSeconds - a.cpuSeconds;
        const wall = (b.at - a.at) / 1000;
        usage[name] = {
          cpuSeconds,
          cpuCores: wall > 0 ? cpuSeconds / wall : 0,
          peakRssMb: b.peakRssMb,
        };
      }
      return usage;
    },
  };
}
