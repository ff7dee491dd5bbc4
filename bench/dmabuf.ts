/**
 * Buffer hand-off: a buffer of 4 KiB, 1 MiB and 32 MiB goes from the main thread through three
 * workers and back (main -> w1 -> w2 -> w3 -> main), as a dma-buf (each thread imports the same
 * memory and shares it on), as a structured clone of an ArrayBuffer (a copy per hop), and as a
 * transferred ArrayBuffer (moved, not copied, but only one thread can hold it at a time). Same
 * run, same relay.
 *
 * @module
 */
import { MessageChannel, Worker } from 'node:worker_threads';
import { createSystemHeap } from '../src/heaps/system-heap.js';
import { type DmaBuf, DmaBuf as DmaBufClass, type DmaBufMessage } from '../src/index.js';
import {
  type BenchGroup,
  type BenchResult,
  nextMessage,
  sampleTimes,
  withBaseline,
} from './harness.js';
import type { RelayData } from './workers/relay.js';

const SIZES: [string, number][] = [
  ['4KiB', 4 << 10],
  ['1MiB', 1 << 20],
  ['32MiB', 32 << 20],
];
const relayUrl = new URL('./workers/relay.js', import.meta.url);

/** A relay of three workers; `send` posts into it and resolves with what comes back. */
async function withRelay<T>(
  mode: RelayData['mode'],
  body: (send: (m: unknown, transfer?: ArrayBuffer[]) => Promise<unknown>) => Promise<T>,
): Promise<T> {
  const channels = [0, 1, 2, 3].map(() => new MessageChannel());
  const workers = [0, 1, 2].map((i) => {
    const data: RelayData = { mode, inPort: channels[i]!.port2, outPort: channels[i + 1]!.port1 };
    return new Worker(relayUrl, { workerData: data, transferList: [data.inPort, data.outPort] });
  });
  const head = channels[0]!.port1;
  const tail = channels[3]!.port2;
  try {
    return await body((m, transfer) => {
      const back = nextMessage<unknown>(tail);
      head.postMessage(m, transfer ?? []);
      return back;
    });
  } finally {
    head.postMessage('stop');
    await nextMessage(tail).catch(() => undefined);
    head.close();
    tail.close();
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1] ?? Number.NaN;
}

export const dmabufGroup: BenchGroup = {
  name: 'dmabuf',
  async run(opts) {
    const out: BenchResult[] = [];
    const heap = createSystemHeap({ name: 'bench-handoff', capacity: 40 << 20 });
    const ours: Record<string, BenchResult> = {};
    try {
      await withRelay('dmabuf', async (send) => {
        for (const [label, bytes] of SIZES) {
          const buf: DmaBuf = heap.allocate(bytes);
          try {
            const samples = await sampleTimes(
              async () => {
                const back = DmaBufClass.import((await send(buf.share())) as DmaBufMessage);
                back.dispose();
              },
              { minMs: opts.quick ? 100 : 300, minSamples: 20, warmup: 20 },
            );
            ours[label] = {
              name: `dmabuf.handoff_3_workers.${label}`,
              value: median(samples),
              unit: 'us',
              note: 'main -> 3 workers -> main; each imports the same buffer and shares it on',
            };
          } finally {
            buf.dispose();
          }
        }
      });
      const clone: Record<string, BenchResult> = {};
      const transfer: Record<string, BenchResult> = {};
      for (const [mode, table] of [
        ['clone', clone],
        ['transfer', transfer],
      ] as const) {
        await withRelay(mode, async (send) => {
          for (const [label, bytes] of SIZES) {
            let ab = new ArrayBuffer(bytes);
            new Uint8Array(ab).fill(7);
            const large = bytes >= 16 << 20;
            const samples = await sampleTimes(
              async () => {
                const back = (await send(
                  ab,
                  mode === 'transfer' ? [ab] : undefined,
                )) as ArrayBuffer;
                if (mode === 'transfer') ab = back;
              },
              { minMs: opts.quick ? 100 : 300, minSamples: large ? 5 : 20, warmup: large ? 1 : 10 },
            );
            table[label] = {
              name: `${mode}.handoff_3_workers.${label}`,
              value: median(samples),
              unit: 'us',
              note:
                mode === 'clone'
                  ? 'an ArrayBuffer copied at every hop'
                  : 'an ArrayBuffer moved at every hop',
            };
          }
        });
      }
      for (const [label] of SIZES) {
        out.push(clone[label]!, transfer[label]!);
        out.push(withBaseline(ours[label]!, clone[label]!));
        out.push({
          ...withBaseline(ours[label]!, transfer[label]!),
          name: `${ours[label]!.name}.vs_transfer`,
        });
      }
      const growth = withBaseline(
        { ...ours['32MiB']!, name: 'dmabuf.handoff_3_workers.growth_32MiB_vs_4KiB', unit: 'us' },
        ours['4KiB']!,
      );
      out.push({ ...growth, note: 'target: ratio <= 2 (cost does not grow with size)' });
    } finally {
      heap.remove();
      heap.dispose();
    }
    return out;
  },
};
