// The npm registry mirror on our machines does not serve other platforms' builds of optional
// native packages (biome, buf), so `npm install` leaves them out of package-lock.json and
// `npm ci` then refuses the lock as out of sync. This adds their entries with os/cpu set, so
// npm skips them on other platforms exactly as it would with a complete lock. Run after
// `npm install <pkg>`: node scripts/complete-lockfile.ts
import { readFileSync, writeFileSync } from "node:fs";

interface LockEntry {
  version?: string;
  dev?: boolean;
  optionalDependencies?: Record<string, string>;
  [key: string]: unknown;
}

const file = process.argv[2] ?? "package-lock.json";
const lock = JSON.parse(readFileSync(file, "utf8")) as { packages: Record<string, LockEntry> };
const cpuOf: Record<string, string> = {
  arm64: "arm64",
  aarch64: "arm64",
  x64: "x64",
  armv7: "arm",
};
let added = 0;
for (const [path, entry] of Object.entries(lock.packages)) {
  for (const [name, version] of Object.entries(entry.optionalDependencies ?? {})) {
    const key = `node_modules/${name}`;
    if (lock.packages[key]) continue;
    const platform =
      /-(android|darwin|linux|win32|freebsd)-(arm64|aarch64|x64|armv7)(-musl)?$/.exec(name);
    if (!platform) {
      console.error(`cannot tell the platform of ${name} (optional dependency of ${path})`);
      process.exit(1);
    }
    const [, os = "", cpu = "", musl] = platform;
    lock.packages[key] = {
      version,
      dev: entry.dev,
      optional: true,
      os: [os],
      cpu: [cpuOf[cpu] ?? cpu],
      ...(musl ? { libc: ["musl"] } : {}),
    };
    added++;
  }
}
writeFileSync(file, `${JSON.stringify(lock, null, 2)}\n`);
console.log(`${file}: added ${added} platform entries`);
