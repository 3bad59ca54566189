// `npm test`: every check CI runs, in order, stopping at the first failure.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";

interface Step {
  name: string;
  command: string[];
  when?: () => boolean;
}

const hasGitMain = () =>
  existsSync(".git") &&
  spawnSync("git", ["rev-parse", "--verify", "--quiet", "main:proto"], { stdio: "ignore" })
    .status === 0;

const steps: Step[] = [
  { name: "lint and format (biome)", command: ["biome", "ci", "--colors=off", "."] },
  { name: "contracts lint (buf)", command: ["buf", "lint"] },
  { name: "contracts format (buf)", command: ["buf", "format", "--diff", "--exit-code"] },
  {
    name: "contracts breaking changes against main (buf)",
    command: ["buf", "breaking", "--against", ".git#branch=main"],
    when: hasGitMain,
  },
  { name: "generated code is up to date", command: ["node", "scripts/check-generated.ts"] },
  { name: "types (tsc)", command: ["tsc", "--noEmit"] },
  { name: "tests (vitest)", command: ["vitest", "run", ...process.argv.slice(2)] },
];

for (const step of steps) {
  if (step.when && !step.when()) {
    console.log(`\n▶ ${step.name}: skipped (no main branch with contracts to compare against)`);
    continue;
  }
  console.log(`\n▶ ${step.name}`);
  const [bin, ...args] = step.command;
  const result = spawnSync(bin as string, args, { stdio: "inherit" });
  if (result.status !== 0) {
    console.error(`\n✗ ${step.name} failed`);
    process.exit(result.status ?? 1);
  }
}
console.log("\n✓ all checks passed");
