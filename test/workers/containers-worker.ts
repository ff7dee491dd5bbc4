// Worker side of the container tests (arrays, chains, unwrap): owns fences, signals them in a
// given order, waits on containers, and runs the chain find-race loop. Commands arrive as
// messages `{ id, op, ... }`; every command is answered with `{ id, ok, ... }`.
import { parentPort, threadId, workerData } from 'node:worker_threads';
import { DmaFence } from '../../src/dma-fence.js';
import { DmaFenceArray } from '../../src/dma-fence-array.js';
import { DmaFenceChain } from '../../src/dma-fence-chain.js';
import type { SharedMessage } from '../../src/substrate/handle.js';

interface Command {
  id: number;
  op: string;
  [k: string]: unknown;
}

const port = parentPort!;
const name = `w${(workerData as { index?: number } | undefined)?.index ?? threadId}`;
let owned: DmaFence[] = [];
let imported: DmaFence[] = [];
let enabled = 0;
let callbacks = 0;

/** Small deterministic PRNG so that a failing seed can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pause(rand: () => number, maxMs: number): Promise<void> {
  if (maxMs <= 0) return Promise.resolve();
  const r = rand();
  if (r < 0.5) return new Promise((res) => setImmediate(res));
  return new Promise((res) => setTimeout(res, Math.floor(r * maxMs)));
}

async function run(cmd: Command): Promise<Record<string, unknown>> {
  switch (cmd.op) {
    case 'create': {
      // Fences owned by this thread, on one new context, seqno 1..n. With `ops`, this thread
      // runs their enableSignaling op, so a waiter elsewhere must reach it by mailbox.
      const n = cmd.n as number;
      const ctx = DmaFence.contextAlloc(1);
      const ops = cmd.ops
        ? {
            driverName: 'containers-worker',
            timelineName: name,
            enableSignaling: (): boolean => {
              enabled++;
              return true;
            },
          }
        : undefined;
      const made: DmaFence[] = [];
      for (let i = 0; i < n; i++) made.push(new DmaFence(ctx, BigInt(i + 1), ops));
      owned.push(...made);
      return { context: ctx, fences: made.map((f) => f.share()) };
    }
    case 'signal': {
      // Signals owned fences (by index into `owned`) in the given order, with optional errors
      // and random pauses; `addCallbacks` first hangs a callback in this thread on each.
      const order = cmd.order as number[];
      const errors = (cmd.errors ?? {}) as Record<string, number>;
      const rand = rng((cmd.seed as number) ?? 1);
      const maxPause = (cmd.maxPauseMs as number) ?? 0;
      for (const i of order) {
        await pause(rand, maxPause);
        const f = owned[i]!;
        const e = errors[String(i)];
        if (e !== undefined) f.setError(e);
        f.signal();
      }
      return { signalled: order.length };
    }
    case 'import': {
      const msgs = cmd.fences as SharedMessage[];
      imported = msgs.map((m) => DmaFence.import(m));
      return { kinds: imported.map((f) => f.constructor.name) };
    }
    case 'wait': {
      // Waits on an imported container, sync or async; reports what it saw.
      const f = DmaFence.import(cmd.fence as SharedMessage);
      try {
        if (cmd.callback) {
          f.addCallback(() => {
            callbacks++;
          });
        }
        if (cmd.arm) f.enableSwSignaling();
        if (cmd.readyFirst) port.postMessage({ id: cmd.id, ready: true });
        const timeout = (cmd.timeout as number | undefined) ?? 30_000;
        const r = cmd.sync ? f.waitSync({ timeout }) : await f.wait({ timeout });
        return {
          remaining: r,
          signalled: f.isSignaledFlag(),
          status: f.getStatus(),
          error: f.error,
          kind: f.constructor.name,
        };
      } finally {
        f.dispose();
      }
    }
    case 'findRace': {
      // The kernel's __find_race: look up random points of a shared chain while signalling
      // random fences of it, checking what find_seqno may and may not return.
      const tail = DmaFence.import(cmd.tail as SharedMessage);
      const fences = (cmd.fences as SharedMessage[]).map((m) => DmaFence.import(m));
      const rand = rng(cmd.seed as number);
      const len = fences.length;
      const problems: string[] = [];
      let found = 0;
      let gone = 0;
      try {
        for (let it = 0; it < (cmd.iterations as number) && problems.length === 0; it++) {
          const seqno = Math.floor(rand() * len) + 1;
          let res: { fence: DmaFence | null };
          try {
            res = DmaFenceChain.findSeqno(tail, BigInt(seqno));
          } catch (e) {
            problems.push(`find_seqno(${seqno}) threw ${String(e)}`);
            break;
          }
          const f = res.fence;
          if (!f) {
            gone++;
            // Collected: every point up to seqno has signalled.
            for (let i = 0; i < seqno; i++) {
              if (!fences[i]!.isSignaledFlag()) {
                problems.push(`find_seqno(${seqno}) gave null but fence ${i + 1} is pending`);
                break;
              }
            }
          } else {
            found++;
            const node = f as DmaFenceChain;
            if (!DmaFenceChain.isChain(f) || node.prevSeqno >= BigInt(seqno)) {
              problems.push(`find_seqno(${seqno}) gave a node past the point`);
            }
            for (let s = Number(f.seqno) + 1; s <= seqno; s++) {
              if (!fences[s - 1]!.isSignaledFlag()) {
                problems.push(`find_seqno(${seqno}) skipped pending point ${s}`);
                break;
              }
            }
            if (f.seqno === BigInt(seqno)) {
              try {
                DmaFenceChain.findSeqno(f, BigInt(seqno)).fence?.dispose();
              } catch (e) {
                problems.push(`find-self(${seqno}) threw ${String(e)}`);
              }
            }
            f.dispose();
          }
          // Never the last fence: the tail stays pending, as in the kernel test.
          fences[Math.floor(rand() * (len - 1))]!.checkAndSignal();
          if ((it & 63) === 0) await new Promise((res) => setImmediate(res));
        }
      } finally {
        tail.dispose();
        for (const f of fences) f.dispose();
      }
      return { problems, found, gone };
    }
    case 'stats':
      return { enabled, callbacks, owned: owned.length };
    case 'dispose': {
      for (const f of owned) f.dispose();
      for (const f of imported) f.dispose();
      owned = [];
      imported = [];
      return {};
    }
    case 'exit':
      setImmediate(() => port.close());
      return {};
    default:
      throw new Error(`unknown op ${cmd.op}`);
  }
}

port.on('message', (cmd: Command) => {
  run(cmd).then(
    (r) => port.postMessage({ id: cmd.id, ok: true, ...r }),
    (e: unknown) =>
      port.postMessage({
        id: cmd.id,
        ok: false,
        error: e instanceof Error ? `${e.name}: ${e.message}\n${e.stack}` : String(e),
      }),
  );
});

// Keeps the array class loaded in this thread (containers arrive as their own classes).
void DmaFenceArray;
