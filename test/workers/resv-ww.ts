// Worker side of the ww_mutex tests: the threads of the kernel's test-ww_mutex.c scenarios
// (mutex exclusion, ABBA, cycles, stress), retold. Handshakes go through a shared Int32Array so a
// worker may block in a lock while the others proceed. Each worker posts one result and exits.
import { parentPort, workerData } from 'node:worker_threads';
import { DmaBufError } from '../../src/substrate/errno.js';
import type { SharedMessage } from '../../src/substrate/handle.js';
import { WwAcquireCtx, WwClass, WwMutex } from '../../src/ww-mutex.js';

export interface WwClassSpec {
  name: string;
  waitDie: boolean;
}

export type WwWorkerData =
  | { scenario: 'unlock'; cls: WwClassSpec; lock: SharedMessage }
  | {
      scenario: 'mutex';
      cls: WwClassSpec;
      lock: SharedMessage;
      flags: SharedArrayBuffer;
      trylock: boolean;
    }
  | {
      scenario: 'abba';
      cls: WwClassSpec;
      first: SharedMessage;
      second: SharedMessage;
      flags: SharedArrayBuffer;
      /** Flag index this worker sets when it holds `first`, and the one it waits for. */
      mine: number;
      other: number;
      trylock: boolean;
      resolve: boolean;
    }
  | {
      scenario: 'cycle';
      cls: WwClassSpec;
      own: SharedMessage;
      next: SharedMessage;
      flags: SharedArrayBuffer;
      index: number;
      count: number;
    }
  | {
      scenario: 'stress';
      cls: WwClassSpec;
      locks: SharedMessage[];
      /** One word per lock: the id of the worker inside it (0: nobody). */
      owners: SharedArrayBuffer;
      mode: 'inorder' | 'reorder' | 'one';
      durationMs: number;
      id: number;
      seed: number;
    };

export interface WwWorkerResult {
  /** 0, or the negative errno the scenario ended with. */
  result: number;
  rounds?: number;
  backoffs?: number;
  violations?: number;
}

const data = workerData as WwWorkerData;
const cls = new WwClass(data.cls.name, { waitDie: data.cls.waitDie });

function code(e: unknown): number {
  if (e instanceof DmaBufError) return -e.errno;
  throw e;
}

/** Returns 0, or the negative errno of a DmaBufError. */
function attempt(fn: () => void): number {
  try {
    fn();
    return 0;
  } catch (e) {
    return code(e);
  }
}

function waitFlag(flags: Int32Array, i: number): void {
  while (Atomics.load(flags, i) === 0) Atomics.wait(flags, i, 0, 50);
}

function setFlag(flags: Int32Array, i: number): void {
  Atomics.store(flags, i, 1);
  Atomics.notify(flags, i);
}

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

function spin(us: number): void {
  const end = performance.now() + us / 1000;
  while (performance.now() < end) {
    /* dummy load */
  }
}

function mutexScenario(d: Extract<WwWorkerData, { scenario: 'mutex' }>): WwWorkerResult {
  const flags = new Int32Array(d.flags);
  using m = WwMutex.import(d.lock);
  setFlag(flags, 0); // ready
  waitFlag(flags, 1); // go
  if (d.trylock) {
    while (!m.trylock()) Atomics.wait(flags, 3, 0, 0.2);
  } else {
    m.lock();
  }
  setFlag(flags, 2); // done
  m.unlock();
  return { result: 0 };
}

function abbaScenario(d: Extract<WwWorkerData, { scenario: 'abba' }>): WwWorkerResult {
  const flags = new Int32Array(d.flags);
  using first = WwMutex.import(d.first);
  using second = WwMutex.import(d.second);
  using ctx = new WwAcquireCtx(cls, { debugSlowpath: false });
  if (d.trylock) {
    if (!first.trylock(ctx)) return { result: -5 };
  } else {
    first.lock(ctx);
  }
  if (first.ctx !== ctx) return { result: -22 };
  setFlag(flags, d.mine);
  waitFlag(flags, d.other);
  let err = attempt(() => second.lock(ctx));
  if (d.resolve && err === -35) {
    first.unlock();
    second.lockSlow(ctx);
    err = attempt(() => first.lock(ctx));
    if (err !== 0) {
      second.unlock();
      ctx.fini();
      return { result: err };
    }
  }
  if (err === 0) second.unlock();
  first.unlock();
  ctx.fini();
  return { result: err };
}

function cycleScenario(d: Extract<WwWorkerData, { scenario: 'cycle' }>): WwWorkerResult {
  const flags = new Int32Array(d.flags);
  using own = WwMutex.import(d.own);
  using next = WwMutex.import(d.next);
  using ctx = new WwAcquireCtx(cls, { debugSlowpath: false });
  own.lock(ctx);
  // Our lock is held: the previous worker may now go for it. Wait until the next worker holds
  // its own, then go for that one: every worker waits on the next, closing the cycle.
  setFlag(flags, d.index);
  waitFlag(flags, (d.index + 1) % d.count);
  // The kernel's test backs off once and then expects the second lock to succeed; with a fast
  // neighbour the retried lock can meet an older holder again, so this retries until done (the
  // ww-mutex-design loop): release, slow-lock the contended one, take the other.
  let held: WwMutex = own;
  let want: WwMutex = next;
  let err = attempt(() => want.lock(ctx));
  let backoffs = 0;
  while (err === -35) {
    backoffs++;
    held.unlock();
    want.lockSlow(ctx);
    [held, want] = [want, held];
    err = attempt(() => want.lock(ctx));
  }
  if (err === 0) want.unlock();
  held.unlock();
  ctx.fini();
  return { result: err, backoffs };
}

function stressScenario(d: Extract<WwWorkerData, { scenario: 'stress' }>): WwWorkerResult {
  const locks = d.locks.map((m) => WwMutex.import(m));
  const owners = new Int32Array(d.owners);
  const rand = rng(d.seed);
  const n = locks.length;
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  let rounds = 0;
  let backoffs = 0;
  let violations = 0;
  const enter = (i: number): void => {
    if (Atomics.compareExchange(owners, i, 0, d.id) !== 0) violations++;
  };
  const leave = (i: number): void => {
    if (Atomics.compareExchange(owners, i, d.id, 0) !== d.id) violations++;
  };
  const end = performance.now() + d.durationMs;
  let result = 0;
  try {
    if (d.mode === 'one') {
      const i = Math.floor(rand() * n);
      const m = locks[i]!;
      while (performance.now() < end) {
        m.lock();
        enter(i);
        spin(20);
        leave(i);
        m.unlock();
        rounds++;
      }
    } else if (d.mode === 'inorder') {
      // Lock in one fixed (random) order; after EDEADLK take the contended one first, then the
      // rest in order skipping it.
      while (performance.now() < end) {
        const ctx = new WwAcquireCtx(cls);
        let contended = -1;
        for (;;) {
          const held = contended >= 0 ? [order[contended]!] : [];
          let failed = -1;
          for (let k = 0; k < n; k++) {
            if (k === contended) continue;
            const r = attempt(() => locks[order[k]!]!.lock(ctx));
            if (r === -35) {
              failed = k;
              break;
            }
            if (r !== 0) throw new Error(`lock failed with ${r}`);
            held.push(order[k]!);
          }
          if (failed < 0) {
            for (const h of held) enter(h);
            spin(20);
            for (const h of held) leave(h);
          }
          for (let j = held.length - 1; j >= 0; j--) locks[held[j]!]!.unlock();
          if (failed < 0) break;
          backoffs++;
          contended = failed;
          locks[order[contended]!]!.lockSlow(ctx);
        }
        ctx.fini();
        ctx.dispose();
        rounds++;
      }
    } else {
      // Reorder: lock in list order; on EDEADLK unlock, slow-lock the contended one and move it
      // to the front of the list (the kernel's list_move), then restart the walk.
      const list = order.slice();
      while (performance.now() < end) {
        const ctx = new WwAcquireCtx(cls);
        const held: number[] = [];
        for (let k = 0; k < list.length; ) {
          const idx = list[k]!;
          if (held.includes(idx)) {
            k++;
            continue;
          }
          const r = attempt(() => locks[idx]!.lock(ctx));
          if (r === 0) {
            held.push(idx);
            k++;
            continue;
          }
          if (r !== -35) throw new Error(`lock failed with ${r}`);
          for (const h of held.reverse()) locks[h]!.unlock();
          held.length = 0;
          backoffs++;
          locks[idx]!.lockSlow(ctx);
          held.push(idx);
          list.splice(k, 1);
          list.unshift(idx);
          k = 0;
        }
        for (const h of held) enter(h);
        spin(20);
        for (const h of held) leave(h);
        for (const h of held) locks[h]!.unlock();
        ctx.fini();
        ctx.dispose();
        rounds++;
      }
    }
  } catch (e) {
    result = code(e);
  } finally {
    for (const l of locks) l.dispose();
  }
  return { result, rounds, backoffs, violations };
}

function run(): WwWorkerResult {
  switch (data.scenario) {
    case 'unlock': {
      // Someone else holds the lock: unlocking it here must be refused.
      using m = WwMutex.import(data.lock);
      const locked = m.isLocked() && !m.isHeld();
      return { result: locked ? attempt(() => m.unlock()) : -22 };
    }
    case 'mutex':
      return mutexScenario(data);
    case 'abba':
      return abbaScenario(data);
    case 'cycle':
      return cycleScenario(data);
    case 'stress':
      return stressScenario(data);
  }
}

parentPort?.postMessage(run());
