/**
 * dma-buf heap benchmarks: allocate + free throughput of the system and CMA heaps at 4 KiB,
 * 1 MiB and 8 MiB, each against allocating a fresh `SharedArrayBuffer` of the same size.
 * Heap memory is zeroed on every allocation that reuses memory, as the kernel's is.
 *
 * @module
 */
import { createCmaHeap } from '../src/heaps/cma-heap.js';
import { createSystemHeap } from '../src/heaps/system-heap.js';
import { type BenchGroup, type BenchResult, measureThroughput, withBaseline } from './harness.js';

const SIZES: [string, number][] = [
  ['4KiB', 4096],
  ['1MiB', 1 << 20],
  ['8MiB', 8 << 20],
];

export const heapsGroup: BenchGroup = {
  name: 'heaps',
  async run(opts) {
    const minMs = opts.quick ? 100 : 400;
    const out: BenchResult[] = [];
    const sys = createSystemHeap({ name: 'bench-system', capacity: 64 << 20 });
    const cma = createCmaHeap({ name: 'bench-cma', capacity: 64 << 20 });
    try {
      for (const [label, bytes] of SIZES) {
        let sink = 0;
        const sab = await measureThroughput(
          () => {
            const s = new SharedArrayBuffer(bytes);
            sink += s.byteLength;
          },
          { minMs },
        );
        const base: BenchResult = { name: `heaps.fresh_sab.${label}`, value: sab, unit: 'ops/s' };
        out.push(base);
        for (const [hn, heap] of [
          ['system', sys],
          ['cma', cma],
        ] as const) {
          const v = await measureThroughput(
            () => {
              const b = heap.allocate(bytes);
              b.dispose();
            },
            { minMs },
          );
          out.push(
            withBaseline(
              { name: `heaps.${hn}.alloc_free.${label}`, value: v, unit: 'ops/s' },
              base,
            ),
          );
        }
        if (sink < 0) out.push({ name: 'never', value: sink, unit: '' });
      }
    } finally {
      for (const h of [sys, cma]) {
        h.remove();
        h.dispose();
      }
    }
    return out;
  },
};
