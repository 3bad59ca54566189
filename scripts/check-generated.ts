// Regenerates proto/gen and fails if the committed code differs from what buf produces.
import { execFileSync } from "node:child_process";

execFileSync("buf", ["generate"], { stdio: "inherit" });
const drift = execFileSync("git", ["status", "--porcelain", "--", "proto/gen"], {
  encoding: "utf8",
});
if (drift.trim() !== "") {
  console.error(
    `generated code differs from proto/ — run \`npm run generate\` and commit:\n${drift}`,
  );
  process.exit(1);
}
console.log("proto/gen matches the contracts");
