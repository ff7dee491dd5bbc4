// Runs every compiled test file with node's built-in test runner.
// Node 20's runner does not expand globs itself, so the list is built here.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const root = 'build/test';
const files = readdirSync(root, { recursive: true })
  .map(String)
  .filter((f) => f.endsWith('.test.js'))
  .sort()
  .map((f) => join(root, f));
const filter = process.argv.slice(2);
const selected = filter.length ? files.filter((f) => filter.some((p) => f.includes(p))) : files;
if (selected.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}
const r = spawnSync(
  process.execPath,
  ['--expose-gc', '--test', '--test-concurrency=2', ...selected],
  {
    stdio: 'inherit',
  },
);
process.exit(r.status ?? 1);
