/**
 * A tiny benchmark harness.
 *
 * A benchmark *group* is `{ name, run(opts) }` and returns a list of {@linkcode BenchResult}s.
 * Groups are added with {@linkcode register} (see `bench/index.ts`), then {@linkcode main}
 * parses the command line, runs the selected groups in registration order and prints either an
 * aligned table (default) or, with `--json`, only a JSON array of results on stdout.
 *
 * Everything else here is small measuring helpers: percentiles, a throughput loop, a per-call
 * timing sampler, and worker helpers that always terminate the workers they start.
 *
 * Timestamps are `process.hrtime.bigint()` ({@linkcode nowNs}): CLOCK_MONOTONIC in nanoseconds,
 * the same clock in every thread of the process, so a stamp taken in one worker can be
 * subtracted from a stamp taken in another.
 *
 * @module
 */
import { parseArgs } from 'node:util';
import { type MessagePort, type Transferable, Worker } from 'node:worker_threads';

/** One measured figure. `ratio` (when set) is `value / baseline_value`. */
export interface BenchResult {
  name: string;
  value: number;
  unit: string;
  /** Name of the result this one is compared with. */
  baseline?: string;
  baseline_value?: number;
  ratio?: number;
  note?: string;
}

/** Command-line options, handed to every group's `run`. */
export interface BenchOptions {
  /** Print only a JSON array of results on stdout. */
  json: boolean;
  /** Shorter runs (fewer samples); figures are noisier. */
  quick: boolean;
  /** Run only groups whose name contains this substring. */
  filter: string | undefined;
}

/** A named set of benchmarks. */
export interface BenchGroup {
  name: string;
  run(opts: BenchOptions): Promise<BenchResult[]>;
}

// ---------------------------------------------------------------------------------------------
// Registry

const registry: BenchGroup[] = [];

/** Adds a group; groups run in registration order. Names must be unique. */
export function register(group: BenchGroup): void {
  if (registry.some((g) => g.name === group.name)) {
    throw new Error(`bench group '${group.name}' registered twice`);
  }
  registry.push(group);
}

/** The registered groups, in registration order. */
export function registeredGroups(): readonly BenchGroup[] {
  return registry;
}

// ---------------------------------------------------------------------------------------------
// Statistics and timing

/** CLOCK_MONOTONIC in nanoseconds; comparable across the threads of one process. */
export function nowNs(): bigint {
  return process.hrtime.bigint();
}

/** Microseconds elapsed from `startNs` (a {@linkcode nowNs} stamp) to `endNs` (default: now). */
export function elapsedUs(startNs: bigint, endNs: bigint = nowNs()): number {
  return Number(endNs - startNs) / 1000;
}

/**
 * The `p`-th percentile (0..100) of `values`, sorted or not (the input is not modified).
 * Linear interpolation between the closest ranks (numpy's default); NaN for an empty list.
 */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = isSorted(values) ? values : [...values].sort((a, b) => a - b);
  const rank = (Math.min(100, Math.max(0, p)) / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  const a = sorted[lo] ?? Number.NaN;
  const b = sorted[hi] ?? a;
  return a + (b - a) * (rank - lo);
}

function isSorted(values: readonly number[]): boolean {
  for (let i = 1; i < values.length; i++) {
    if ((values[i] ?? 0) < (values[i - 1] ?? 0)) return false;
  }
  return true;
}

/** Summary statistics of a sample. */
export interface Summary {
  n: number;
  min: number;
  mean: number;
  p50: number;
  p99: number;
  max: number;
}

/** Summarizes `values` (any order). */
export function summarize(values: readonly number[]): Summary {
  const sorted = [...values].sort((a, b) => a - b);
  const n = sorted.length;
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    n,
    min: sorted[0] ?? Number.NaN,
    mean: n ? sum / n : Number.NaN,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: sorted[n - 1] ?? Number.NaN,
  };
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return (
    typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function'
  );
}

/**
 * Calls `fn` repeatedly for at least `minMs` (after `warmupMs` of warm-up, default `minMs / 5`)
 * and returns operations per second: the median of `windows` (default 5) equal windows, so
 * that a stall of the machine in one window (these VMs have them) does not set the result.
 * `fn` may be async; it is awaited only when it returns a promise. Calls are made in doubling
 * batches so that the clock is read rarely for cheap `fn`s.
 */
export async function measureThroughput(
  fn: () => unknown,
  opts: { minMs: number; warmupMs?: number; windows?: number },
): Promise<number> {
  let batch = 1;
  const loop = async (ms: number): Promise<number> => {
    const start = nowNs();
    const deadline = start + BigInt(Math.round(ms * 1e6));
    let ops = 0;
    let t = start;
    while (t < deadline) {
      const batchStart = t;
      for (let i = 0; i < batch; i++) {
        const r = fn();
        if (isThenable(r)) await r;
      }
      ops += batch;
      t = nowNs();
      // Grow the batch until one batch takes about a millisecond.
      if (t - batchStart < 1_000_000n && batch < 1 << 20) batch *= 2;
    }
    return ops / (Number(t - start) / 1e9);
  };
  await loop(opts.warmupMs ?? opts.minMs / 5);
  const windows = Math.max(1, opts.windows ?? 5);
  const rates: number[] = [];
  for (let w = 0; w < windows; w++) rates.push(await loop(opts.minMs / windows));
  return summarize(rates).p50;
}

/**
 * Times individual calls of `fn` (awaited when it returns a promise) and returns the durations
 * in microseconds, in call order. Runs `warmup` untimed calls first (default 3), then keeps
 * sampling until both `minMs` have passed and `minSamples` (default 10) were taken, or until
 * `maxSamples` (default 1e6) is reached.
 */
export async function sampleTimes(
  fn: () => unknown,
  opts: { minMs: number; minSamples?: number; maxSamples?: number; warmup?: number },
): Promise<number[]> {
  const { minMs, minSamples = 10, maxSamples = 1_000_000, warmup = 3 } = opts;
  for (let i = 0; i < warmup; i++) {
    const r = fn();
    if (isThenable(r)) await r;
  }
  const samples: number[] = [];
  const start = nowNs();
  const deadline = start + BigInt(Math.round(minMs * 1e6));
  while (samples.length < maxSamples) {
    const t0 = nowNs();
    const r = fn();
    if (isThenable(r)) await r;
    const t1 = nowNs();
    samples.push(Number(t1 - t0) / 1000);
    if (t1 >= deadline && samples.length >= minSamples) break;
  }
  return samples;
}

/** Picks the full-run or the `--quick` value of a parameter. */
export function byMode<T>(opts: { quick?: boolean }, full: T, quick: T): T {
  return opts.quick ? quick : full;
}

// ---------------------------------------------------------------------------------------------
// Result helpers

/** Returns a copy of `result` compared with `baseline`: `ratio = value / baseline_value`. */
export function withBaseline(result: BenchResult, baseline: BenchResult): BenchResult {
  return {
    ...result,
    baseline: baseline.name,
    baseline_value: baseline.value,
    ratio: baseline.value === 0 ? Number.NaN : result.value / baseline.value,
  };
}

/** `name.p50` and `name.p99` results (unit `us`) from latency samples in microseconds. */
export function latencyResults(
  name: string,
  samplesUs: readonly number[],
  note?: string,
): { p50: BenchResult; p99: BenchResult; summary: Summary } {
  const summary = summarize(samplesUs);
  const n = `n=${summary.n}${note ? `; ${note}` : ''}`;
  return {
    p50: { name: `${name}.p50`, value: summary.p50, unit: 'us', note: n },
    p99: { name: `${name}.p99`, value: summary.p99, unit: 'us', note: n },
    summary,
  };
}

/** `4KiB`, `1MiB`, `32MiB`, ... for result names. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1 && v % 1024 === 0) {
    v /= 1024;
    u++;
  }
  return `${v}${units[u]}`;
}

// ---------------------------------------------------------------------------------------------
// Workers

/** What to start a worker with. */
export interface WorkerSpec {
  workerData?: unknown;
  transferList?: Transferable[];
}

/**
 * Resolves with the next message from `source`; rejects on a worker error, on the worker exiting
 * first, or after `timeoutMs` (default 60 s) so that a stuck bench cannot hang the run.
 */
export function nextMessage<T>(source: Worker | MessagePort, timeoutMs = 60_000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const cleanup = (): void => {
      clearTimeout(timer);
      source.off('message', onMessage);
      source.off('error', onError);
      source.off('exit', onExit);
    };
    const onMessage = (m: T): void => {
      cleanup();
      resolve(m);
    };
    const onError = (e: Error): void => {
      cleanup();
      reject(e);
    };
    const onExit = (code: number): void => {
      cleanup();
      reject(new Error(`worker exited (code ${code}) before sending a message`));
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`no message from worker within ${timeoutMs} ms`));
    }, timeoutMs);
    source.on('message', onMessage);
    source.on('error', onError);
    source.on('exit', onExit);
  });
}

/** Starts one worker per spec, runs `body`, and terminates all of them however `body` ends. */
export async function withWorkers<T>(
  url: URL,
  specs: readonly WorkerSpec[],
  body: (workers: Worker[]) => Promise<T>,
): Promise<T> {
  const workers: Worker[] = [];
  try {
    for (const s of specs) {
      workers.push(new Worker(url, { workerData: s.workerData, transferList: s.transferList }));
    }
    return await body(workers);
  } finally {
    await Promise.allSettled(workers.map((w) => w.terminate()));
  }
}

/**
 * The common shape of a worker bench: start one worker per spec, let them run on their own, and
 * collect the single result message each one posts. Workers are terminated afterwards.
 */
export function runWorkerBench<R>(
  url: URL,
  specs: readonly WorkerSpec[],
  timeoutMs = 60_000,
): Promise<R[]> {
  return withWorkers(url, specs, (workers) =>
    Promise.all(workers.map((w) => nextMessage<R>(w, timeoutMs))),
  );
}

// ---------------------------------------------------------------------------------------------
// Command line and output

const USAGE = `usage: node build/bench/index.js [--json] [--quick] [--filter <substring>]
  --json      print only a JSON array of results on stdout
  --quick     shorter runs
  --filter s  run only groups whose name contains s`;

/** Parses `--json`, `--quick`, `--filter <substring>` (and `--help`). Throws on unknown flags. */
export function parseBenchArgs(argv: readonly string[]): BenchOptions & { help: boolean } {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      json: { type: 'boolean', default: false },
      quick: { type: 'boolean', default: false },
      filter: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  return {
    json: values.json ?? false,
    quick: values.quick ?? false,
    filter: values.filter,
    help: values.help ?? false,
  };
}

function formatNumber(v: number | undefined): string {
  if (v === undefined) return '';
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a >= 1000) return Math.round(v).toLocaleString('en-US');
  if (a >= 100) return v.toFixed(1);
  if (a >= 1 || a === 0) return v.toFixed(2);
  return v.toPrecision(3);
}

/** Renders results as an aligned text table (numbers right-aligned). */
export function formatTable(results: readonly BenchResult[]): string {
  const header = ['name', 'value', 'unit', 'baseline', 'baseline value', 'ratio', 'note'];
  const numeric = [false, true, false, false, true, true, false];
  const rows = results.map((r) => [
    r.name,
    formatNumber(r.value),
    r.unit,
    r.baseline ?? '',
    formatNumber(r.baseline_value),
    r.ratio === undefined ? '' : `${formatNumber(r.ratio)}x`,
    r.note ?? '',
  ]);
  const widths = header.map((h, i) =>
    Math.max(h.length, ...rows.map((row) => row[i]?.length ?? 0)),
  );
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (numeric[i] ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** Progress and diagnostics go to stderr so that `--json` stdout stays pure. */
function log(msg: string): void {
  process.stderr.write(`${msg}\n`);
}

/**
 * Runs the registered groups selected by `argv` and prints the results. Returns the process exit
 * code: 0 on success, 1 if a group failed (the others still run), 2 on bad usage.
 */
export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<number> {
  let opts: ReturnType<typeof parseBenchArgs>;
  try {
    opts = parseBenchArgs(argv);
  } catch (e) {
    log(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (opts.help) {
    log(USAGE);
    return 0;
  }
  const filter = opts.filter;
  const groups = registeredGroups().filter((g) => filter === undefined || g.name.includes(filter));
  if (groups.length === 0) {
    log(`no bench group matches '${filter}' (groups: ${registry.map((g) => g.name).join(', ')})`);
    return 2;
  }
  const all: BenchResult[] = [];
  let failed = 0;
  for (const g of groups) {
    const t0 = nowNs();
    log(`[bench] ${g.name}${opts.quick ? ' (quick)' : ''} ...`);
    try {
      const results = await g.run(opts);
      all.push(...results);
      log(`[bench] ${g.name}: ${results.length} results in ${(elapsedUs(t0) / 1e6).toFixed(1)} s`);
      if (!opts.json) process.stdout.write(`\n## ${g.name}\n${formatTable(results)}\n`);
    } catch (e) {
      failed++;
      log(`[bench] ${g.name} FAILED: ${(e as Error).stack ?? String(e)}`);
    }
  }
  if (opts.json) process.stdout.write(`${JSON.stringify(all, null, 2)}\n`);
  return failed ? 1 : 0;
}
