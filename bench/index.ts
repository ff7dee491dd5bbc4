/**
 * Benchmark entry point: `npm run bench [-- --json] [-- --quick] [-- --filter <substring>]`.
 *
 * Groups run in the order they are registered below. To add a group, write a module that
 * exports a `BenchGroup` and add ONE line at the end of the list:
 *
 *     register((await import('./fence.js')).fenceGroup);
 *
 * @module
 */
import {
  compareLatency,
  HANDOFF_SIZES,
  messagePortPingPong,
  postCloneRoundTrip,
  rawAtomicsLongWait,
  rawAtomicsPingPong,
  structuredCloneCost,
  transferCost,
} from './baselines.js';
import { type BenchGroup, type BenchResult, main, register, withBaseline } from './harness.js';

/** The raw baselines, printed on their own; other groups compare against the same figures. */
const baselineGroup: BenchGroup = {
  name: 'baseline',
  async run(opts) {
    const out: BenchResult[] = [];
    const atomics = await rawAtomicsPingPong(opts);
    out.push(atomics.p50, atomics.p99);
    const longWait = await rawAtomicsLongWait(opts);
    out.push(longWait.p50, longWait.p99);
    // postMessage compared with the Atomics floor.
    const port = await messagePortPingPong(opts);
    out.push(...compareLatency(port, atomics));
    for (const bytes of HANDOFF_SIZES) out.push(await structuredCloneCost(bytes, opts));
    for (const bytes of HANDOFF_SIZES) out.push(await transferCost(bytes, opts));
    // Copying both ways compared with moving both ways.
    for (const bytes of HANDOFF_SIZES) {
      out.push(
        withBaseline(await postCloneRoundTrip(bytes, opts), await transferCost(bytes, opts)),
      );
    }
    return out;
  },
};

register(baselineGroup);
register((await import('./fence.js')).fenceGroup);
register((await import('./resv.js')).resvGroup);
register((await import('./syncobj.js')).syncobjGroup);
register((await import('./heaps.js')).heapsGroup);
register((await import('./dmabuf.js')).dmabufGroup);

process.exitCode = await main();
