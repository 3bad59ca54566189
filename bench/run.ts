// `npm run bench [-- <filter>[,<filter>...]] [--repetitions N]`: runs the scenarios whose name
// contains a filter (all by default), writes results/<timestamp>.{json,md}, and after a full run replaces
// the figures in README.md.
import { loadavg } from "node:os";
import { parseArgs } from "node:util";
import { machineFacts } from "./harness/machine.ts";
import { createPlatform } from "./harness/platform.ts";
import { createProgress } from "./harness/progress.ts";
import { writeReports } from "./harness/report.ts";
import type { BenchReport, ScenarioReport } from "./harness/results.ts";
import { type BenchContext, FULL_SETTINGS, type Scenario } from "./harness/scenario.ts";
import { SCENARIOS } from "./scenarios/index.ts";

const benchDir = new URL(".", import.meta.url).pathname;

export async function runScenarios(
  scenarios: Scenario[],
  ctx: BenchContext,
): Promise<ScenarioReport[]> {
  const reports: ScenarioReport[] = [];
  for (const scenario of scenarios) {
    const startedAt = performance.now();
    const loadBefore = loadavg()[0] ?? 0;
    const load = (): [number, number] => [loadBefore, loadavg()[0] ?? 0];
    ctx.progress.log(`${scenario.name}: ${scenario.title} (~${scenario.expectedS} s)`);
    const base = { name: scenario.name, title: scenario.title };
    try {
      const outcome = await scenario.run({ ...ctx, completed: [...reports] });
      reports.push({
        ...base,
        ...outcome,
        seconds: (performance.now() - startedAt) / 1000,
        load: load(),
      });
    } catch (err) {
      ctx.progress.log(`${scenario.name} failed: ${(err as Error).stack ?? err}`);
      ctx.progress.log(`last lines of each process:\n${ctx.platform.tails()}`);
      reports.push({
        ...base,
        runs: [],
        targets: [],
        notes: [],
        error: (err as Error).message.split("\n")[0],
        seconds: (performance.now() - startedAt) / 1000,
        load: load(),
      });
    }
  }
  return reports;
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { repetitions: { type: "string", short: "r" } },
  });
  const filter = positionals[0];
  const wanted = filter?.split(",").filter(Boolean) ?? [];
  const scenarios = SCENARIOS.filter(
    (s) => wanted.length === 0 || wanted.some((w) => s.name.includes(w)),
  );
  if (scenarios.length === 0) {
    console.error(
      `no scenario matches "${filter}"; there are: ${SCENARIOS.map((s) => s.name).join(", ")}`,
    );
    process.exit(2);
  }
  const settings = {
    ...FULL_SETTINGS,
    repetitions: Math.max(1, Number(values.repetitions ?? FULL_SETTINGS.repetitions)),
  };
  const machine = machineFacts();
  const platform = createPlatform();
  const progress = createProgress();
  const startedAt = new Date().toISOString();
  const stop = () => void platform.stop().finally(() => process.exit(130));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  let scenarioReports: ScenarioReport[];
  try {
    scenarioReports = await runScenarios(scenarios, {
      ...settings,
      platform,
      progress,
      completed: [],
    });
  } finally {
    await platform.stop();
  }
  const report: BenchReport = {
    startedAt,
    finishedAt: new Date().toISOString(),
    filter,
    repetitions: settings.repetitions,
    machine: { ...machine, loadAfter: loadavg() },
    scenarios: scenarioReports,
  };
  const full = !filter && settings.repetitions >= 3;
  const files = await writeReports(report, benchDir, full);
  const targets = scenarioReports.flatMap((s) => s.targets);
  for (const t of targets) {
    console.log(`${t.met ? "met    " : "NOT MET"}  ${t.target}: ${t.measured}`);
  }
  for (const s of scenarioReports.filter((s) => s.error)) {
    console.log(`FAILED   ${s.name}: ${s.error}`);
  }
  console.log(`\n${files.md}\n${files.json}${full ? "\nREADME.md updated" : ""}`);
  process.exit(scenarioReports.some((s) => s.error) ? 1 : 0);
}
