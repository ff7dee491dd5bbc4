// Worker of the multi-worker fence stress test. One worker is the signaller: it creates batches
// of fences and signals them in a random order with random pauses. The others are waiters: each
// imports every fence of a batch, hangs callbacks on them, starts asynchronous waits (plain,
// timed and aborted), then blocks in synchronous waits (single and waitAny) while the signaller
// runs, removes some callbacks while the fences may be signalling, and finally checks what it
// saw. Randomness is seeded; what is asserted is behaviour, never timing.
import { parentPort, threadId } from 'node:worker_threads';
import { DmaBufError, DmaFence, type DmaFenceCb, type SharedMessage } from '../../src/index.js';

interface Request {
  id: number;
  op: string;
  [k: string]: unknown;
}

const port = parentPort;
if (!port) throw new Error('fence-stress must run in a worker');

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

function shuffle<T>(list: T[], rand: () => number): T[] {
  for (let i = list.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [list[i], list[j]] = [list[j]!, list[i]!];
  }
  return list;
}

/** The status every thread must see for fence `i` of a batch. */
function expectedStatus(i: number): number {
  return i % 7 === 3 ? -125 : 1;
}

// ---- signaller ------------------------------------------------------------------------------

let batch: DmaFence[] = [];
let ownCallbacks = 0;
let ownCallbacksRun = 0;

function createBatch(n: number, waiters: number): SharedMessage[][] {
  const ctx = DmaFence.contextAlloc(1);
  batch = [];
  const msgs: SharedMessage[][] = Array.from({ length: waiters }, () => []);
  for (let i = 0; i < n; i++) {
    const f = new DmaFence(ctx, BigInt(i + 1));
    batch.push(f);
    for (let w = 0; w < waiters; w++) msgs[w]!.push(f.share());
    if (i % 5 === 0) {
      ownCallbacks++;
      f.addCallback((x) => {
        if (x.getStatus() === expectedStatus(i)) ownCallbacksRun++;
      });
    }
  }
  return msgs;
}

async function signalBatch(seed: number): Promise<{ signalled: number; errors: string[] }> {
  const rand = rng(seed);
  const order = shuffle(
    batch.map((_, i) => i),
    rand,
  );
  const errors: string[] = [];
  let signalled = 0;
  for (const i of order) {
    const f = batch[i]!;
    if (expectedStatus(i) !== 1) f.setError(expectedStatus(i));
    const runsBefore = ownCallbacksRun;
    f.signal();
    signalled++;
    if (i % 5 === 0 && ownCallbacksRun !== runsBefore + 1) {
      errors.push(`own callback of fence ${i} did not run inside signal()`);
    }
    // A second signal is refused and harmless.
    if (rand() < 0.05 && !f.checkAndSignal()) errors.push(`fence ${i} signalled twice`);
    const r = rand();
    if (r < 0.02) await new Promise((res) => setTimeout(res, 1));
    else if (r < 0.1) await new Promise((res) => setImmediate(res));
  }
  return { signalled, errors };
}

function disposeBatch(): { ownCallbacks: number; ownCallbacksRun: number } {
  for (const f of batch) f.dispose();
  batch = [];
  return { ownCallbacks, ownCallbacksRun };
}

// ---- waiter ---------------------------------------------------------------------------------

interface Plan {
  fence: DmaFence;
  cbs: { cb: DmaFenceCb; key: string; removeLate: boolean }[];
  removed: Map<string, boolean>;
  syncWait: boolean;
  async: Promise<string> | undefined;
  asyncKind: 'none' | 'forever' | 'timed' | 'abort';
}

let plans: Plan[] = [];
const fired = new Map<string, number[]>();
let rand = rng(1);

function prepare(msgs: SharedMessage[], seed: number): number {
  rand = rng(seed ^ threadId);
  fired.clear();
  plans = msgs.map((m, i) => {
    const fence = DmaFence.import(m);
    const plan: Plan = {
      fence,
      cbs: [],
      removed: new Map(),
      syncWait: rand() < 0.3,
      async: undefined,
      asyncKind: 'none',
    };
    const ncb = Math.floor(rand() * 3);
    for (let k = 0; k < ncb; k++) {
      const key = `${i}:${k}`;
      const cb = fence.addCallback((x) => {
        let list = fired.get(key);
        if (!list) {
          list = [];
          fired.set(key, list);
        }
        list.push(x.getStatus());
      });
      const r = rand();
      if (r < 0.1) {
        // Removed at once: certainly still pending (nothing is signalled before `signal`).
        if (!fence.removeCallback(cb)) plan.removed.set(key, false);
        else plan.removed.set(key, true);
      }
      plan.cbs.push({ cb, key, removeLate: r >= 0.1 && r < 0.25 });
    }
    const a = rand();
    if (a < 0.25) {
      plan.asyncKind = 'forever';
      plan.async = fence.wait().then(String, errCode);
    } else if (a < 0.4) {
      plan.asyncKind = 'timed';
      plan.async = fence.wait({ timeout: 1 + Math.floor(rand() * 5) }).then(String, errCode);
    } else if (a < 0.5) {
      plan.asyncKind = 'abort';
      const ac = new AbortController();
      setTimeout(() => ac.abort(), Math.floor(rand() * 5));
      plan.async = fence.wait({ signal: ac.signal }).then(String, errCode);
    }
    return plan;
  });
  return plans.length;
}

function errCode(e: unknown): string {
  return e instanceof DmaBufError ? e.code : `error ${String(e)}`;
}

function syncWaits(): { waits: number; errors: string[] } {
  const errors: string[] = [];
  let waits = 0;
  const order = shuffle(
    plans.map((_, i) => i),
    rand,
  );
  for (const i of order) {
    const p = plans[i]!;
    for (const c of p.cbs) {
      if (c.removeLate && !p.removed.has(c.key)) p.removed.set(c.key, p.fence.removeCallback(c.cb));
    }
    if (p.syncWait) {
      waits++;
      const r = p.fence.waitSync({ timeout: 10_000 });
      if (!(r > 0)) errors.push(`sync wait on fence ${i} returned ${r}`);
      else if (!p.fence.isSignaledFlag()) errors.push(`fence ${i} woke a waiter unsignalled`);
    }
    if (i % 10 === 0 && i + 2 < plans.length) {
      waits++;
      const group = [plans[i]!.fence, plans[i + 1]!.fence, plans[i + 2]!.fence];
      const r = DmaFence.waitAnySync(group, { timeout: 10_000 });
      if (!(r.remaining > 0) || r.index < 0 || !group[r.index]!.isSignaledFlag()) {
        errors.push(`waitAnySync on ${i}.. returned ${JSON.stringify(r)}`);
      }
    }
  }
  return { waits, errors };
}

async function finish(): Promise<{ errors: string[]; callbacks: number; asyncWaits: number }> {
  const errors: string[] = [];
  let expected = 0;
  for (const p of plans) for (const c of p.cbs) if (p.removed.get(c.key) !== true) expected++;
  const results = await Promise.all(plans.map((p) => p.async ?? Promise.resolve('')));
  const deadline = Date.now() + 10_000;
  const count = (): number => {
    let n = 0;
    for (const l of fired.values()) n += l.length;
    return n;
  };
  while (count() < expected && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 1));
  }
  let asyncWaits = 0;
  plans.forEach((p, i) => {
    const want = expectedStatus(i);
    const status = p.fence.getStatus();
    if (status !== want) errors.push(`fence ${i}: status ${status}, expected ${want}`);
    for (const c of p.cbs) {
      const runs = fired.get(c.key) ?? [];
      const removed = p.removed.get(c.key);
      if (removed === true && runs.length !== 0) errors.push(`removed callback ${c.key} ran`);
      if (removed !== true && runs.length !== 1) {
        errors.push(`callback ${c.key} ran ${runs.length} times (removed: ${removed})`);
      }
      if (runs.length === 1 && runs[0] !== want) {
        errors.push(`callback ${c.key} saw status ${runs[0]}, expected ${want}`);
      }
    }
    const r = results[i]!;
    if (p.asyncKind !== 'none') asyncWaits++;
    if (p.asyncKind === 'forever' && r !== 'Infinity') errors.push(`wait on ${i} gave ${r}`);
    if (p.asyncKind === 'timed' && !(Number(r) >= 0)) errors.push(`timed wait on ${i}: ${r}`);
    if (p.asyncKind === 'abort' && r !== 'ERESTARTSYS' && r !== 'Infinity') {
      errors.push(`aborted wait on ${i}: ${r}`);
    }
    // Late add: the fence has signalled, so the callback is refused and never runs.
    if (i % 50 === 0) {
      try {
        p.fence.addCallback(() => errors.push(`late callback on ${i} ran`));
        errors.push(`late addCallback on ${i} was accepted`);
      } catch (e) {
        if (errCode(e) !== 'ENOENT') errors.push(`late addCallback on ${i}: ${errCode(e)}`);
      }
    }
  });
  for (const p of plans) p.fence.dispose();
  plans = [];
  return { errors, callbacks: count(), asyncWaits };
}

// ---- protocol -------------------------------------------------------------------------------

async function handle(req: Request): Promise<unknown> {
  switch (req.op) {
    case 'batch':
      return createBatch(req.n as number, req.waiters as number);
    case 'signal':
      return signalBatch(req.seed as number);
    case 'dispose':
      return disposeBatch();
    case 'prepare':
      return prepare(req.msgs as SharedMessage[], req.seed as number);
    case 'syncwaits':
      return syncWaits();
    case 'finish':
      return finish();
    case 'exit':
      setImmediate(() => process.exit(0));
      return true;
    default:
      throw new Error(`unknown op ${req.op}`);
  }
}

port.on('message', (req: Request) => {
  handle(req).then(
    (value) => port.postMessage({ id: req.id, ok: true, value }),
    (e: unknown) =>
      port.postMessage({
        id: req.id,
        ok: false,
        message: e instanceof Error ? e.stack : String(e),
      }),
  );
});
port.postMessage({ ready: threadId });
