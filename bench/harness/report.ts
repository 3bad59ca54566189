import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { BenchReport, RepeatedRun, ScenarioReport, TargetCheck } from "./results.ts";

const fixed = (n: number | undefined, digits = 2) =>
  n === undefined || !Number.isFinite(n) ? "–" : n.toFixed(digits);
const rps = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "–");

function statuses(counts: Record<string, number>): string {
  return Object.entries(counts)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${k} ${n}`)
    .join(", ");
}

function runRow(run: RepeatedRun): string {
  const m = run.median;
  const cpu = Object.entries(m.usage)
    .map(([name, u]) => `${name} ${fixed(u.cpuCores)}`)
    .join(", ");
  const rss = Object.entries(m.usage)
    .filter(([name]) => name !== "machine" && name !== "steal")
    .map(([name, u]) => `${name} ${Math.round(u.peakRssMb)}`)
    .join(", ");
  const lag = m.sendLag ? ` (send lag p99 ${fixed(m.sendLag.p99)})` : "";
  const mode = m.offeredRps ? `open @ ${rps(m.offeredRps)}/s${lag}` : m.mode;
  const codes = m.serverCodes ? `; server: ${statuses(m.serverCodes)}` : "";
  return `| ${run.label} | ${m.tool} | ${mode} | ${rps(m.throughput)} | ${fixed(m.latency.p50)} | ${fixed(m.latency.p90)} | ${fixed(m.latency.p99)} | ${fixed(m.latency.p999)} | ${fixed(m.latency.max)} | ${statuses(m.statuses)}${codes} | ${cpu} | ${rss} |`;
}

function targetRow(t: TargetCheck): string {
  const verdict = t.met ? "met" : "**NOT MET**";
  return `| ${t.target} | ${t.measured} | ${t.direction} ${t.threshold} | ${fixed(t.value, 3)} | ${verdict}${t.note ? ` — ${t.note}` : ""} |`;
}

function scenarioSection(s: ScenarioReport): string {
  const load = s.load ? `; load average ${s.load[0].toFixed(1)} → ${s.load[1].toFixed(1)}` : "";
  const lines = [`### ${s.title} (\`${s.name}\`, ${Math.round(s.seconds)} s${load})`, ""];
  if (s.error) lines.push(`Did not complete: ${s.error}`, "");
  for (const note of s.notes) lines.push(`- ${note}`);
  if (s.notes.length) lines.push("");
  if (s.runs.length) {
    lines.push(
      `| run | generator | mode | OK/s | p50 | p90 | p99 | p99.9 | max (ms) | statuses (all reps) | CPU cores | peak RSS MB |`,
      "|---|---|---|--:|--:|--:|--:|--:|--:|---|---|---|",
      ...s.runs.map(runRow),
      "",
    );
  }
  return lines.join("\n");
}

/** The figures of one run as Markdown: targets first, then every scenario's runs. */
export function renderMarkdown(report: BenchReport): string {
  const m = report.machine;
  const targets = report.scenarios.flatMap((s) => s.targets);
  const lines = [
    `Run ${report.startedAt} → ${report.finishedAt}${report.filter ? ` (filter \`${report.filter}\`)` : ""}; medians of ${report.repetitions} repetitions.`,
    "",
    `Machine: ${m.nproc} × ${m.cpuModel}, ${m.memoryGb} GB; load average ${m.loadBefore.map((l) => l.toFixed(2)).join(" / ")} before, ${m.loadAfter.map((l) => l.toFixed(2)).join(" / ")} after (1/5/15 min); Node ${m.node}; ${Object.entries(
      m.tools,
    )
      .map(([k, v]) => `${k} ${v}`)
      .join(", ")}.`,
    "",
    "#### Targets",
    "",
    "| target | measured | threshold | value | verdict |",
    "|---|---|---|--:|---|",
    ...targets.map(targetRow),
    "",
    "#### Runs",
    "",
    "Latencies in ms. OK/s counts only calls answered with status OK (h2load: HTTP 2xx, cross-checked by the server's own per-code counters where noted). CPU in cores (1.00 = one core busy) over the measured window; `generator` is the load generator itself; `machine` is every process on the machine, so machine minus the others is what other people's work took from the run; `steal`, when shown, is CPU the hypervisor gave to other virtual machines.",
    "",
    ...report.scenarios.map(scenarioSection),
  ];
  return lines.join("\n");
}

export const README_START = "<!-- bench:results:start -->";
export const README_END = "<!-- bench:results:end -->";

/** Writes results/<timestamp>.{json,md}; with updateReadme, replaces the figures in README.md. */
export async function writeReports(
  report: BenchReport,
  benchDir: string,
  updateReadme: boolean,
): Promise<{ json: string; md: string }> {
  const dir = join(benchDir, "results");
  await mkdir(dir, { recursive: true });
  const stamp = report.startedAt.replace(/[:.]/g, "-");
  const json = join(dir, `${stamp}.json`);
  const md = join(dir, `${stamp}.md`);
  const markdown = renderMarkdown(report);
  await writeFile(json, `${JSON.stringify(report, null, 2)}\n`);
  await writeFile(md, `# coinmesh benchmark\n\n${markdown}\n`);
  if (updateReadme) {
    const readmePath = join(benchDir, "README.md");
    const readme = await readFile(readmePath, "utf8");
    const start = readme.indexOf(README_START);
    const end = readme.indexOf(README_END);
    if (start < 0 || end < start) throw new Error(`${readmePath} lacks the results markers`);
    await writeFile(
      readmePath,
      `${readme.slice(0, start + README_START.length)}\n${markdown}\n${readme.slice(end)}`,
    );
  }
  return { json, md };
}
