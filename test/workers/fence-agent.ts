// A scriptable worker for the cross-thread fence tests: the test thread sends it operations
// ({ id, op, ...args }) and it answers each with { id, ok, value } or { id, ok: false, code }.
// Fences live in a map by name; callbacks and driver ops append what they saw to `events`.
import { parentPort, threadId } from 'node:worker_threads';
import {
  DmaBufError,
  DmaFence,
  type DmaFenceCb,
  type DmaFenceOps,
  LockClass,
  lockAcquire,
  lockdepEnable,
  lockdepReports,
  lockRelease,
  type SharedMessage,
} from '../../src/index.js';
import { type RegionDescriptor, sabBackend } from '../../src/substrate/backend.js';
import { ktimeGetNs } from '../../src/substrate/clock.js';
import { domain, RecordType } from '../../src/substrate/domain.js';
import { lockWord, unlockWord } from '../../src/substrate/lock.js';

/** How the driver ops of a fence created here behave (all optional). */
export interface AgentOps {
  /** enableSignaling: 'true' (armed), 'false' (cannot arm: the core signals), 'timer' (armed,
   * signals after `timerMs`), 'error' (sets -EIO and returns false). */
  enable?: 'true' | 'false' | 'timer' | 'error' | 'throw';
  timerMs?: number;
  /** signaled: the value the poll returns. */
  signaled?: boolean;
  release?: boolean;
  deadline?: boolean;
}

export interface AgentEvent {
  kind: string;
  tag?: string;
  thread: number;
  status?: number | string;
  error?: number | string;
  value?: string;
  /** True when the callback ran inside a signal() call made by this agent. */
  inSignal?: boolean;
}

interface Request {
  id: number;
  op: string;
  [k: string]: unknown;
}

const port = parentPort;
if (!port) throw new Error('fence-agent must run in a worker');

const fences = new Map<string, DmaFence>();
const cbs = new Map<string, DmaFenceCb>();
const events: AgentEvent[] = [];
let signalling = false;
let eventWaiter: { n: number; resolve: () => void } | undefined;

function push(e: AgentEvent): void {
  events.push(e);
  if (eventWaiter && events.length >= eventWaiter.n) {
    const w = eventWaiter;
    eventWaiter = undefined;
    w.resolve();
  }
}

function safe(fn: () => number): number | string {
  try {
    return fn();
  } catch (e) {
    return e instanceof DmaBufError ? e.code : String(e);
  }
}

function fence(name: unknown): DmaFence {
  const f = fences.get(String(name));
  if (!f) throw new Error(`agent has no fence '${String(name)}'`);
  return f;
}

function makeOps(name: string, cfg: AgentOps): DmaFenceOps {
  const ops: {
    driverName: string;
    timelineName: string;
    enableSignaling?: (f: DmaFence) => boolean;
    signaled?: (f: DmaFence) => boolean;
    release?: (f: DmaFence) => void;
    setDeadline?: (f: DmaFence, ns: bigint) => void;
  } = { driverName: 'agent', timelineName: `tl-${name}` };
  if (cfg.enable) {
    ops.enableSignaling = (f) => {
      push({ kind: 'enable', tag: name, thread: threadId, status: safe(() => f.getStatus()) });
      if (cfg.enable === 'timer') {
        setTimeout(() => fences.get(name)?.checkAndSignal(), cfg.timerMs ?? 20);
        return true;
      }
      if (cfg.enable === 'throw') throw new Error('driver bug in enableSignaling');
      if (cfg.enable === 'error') {
        f.setError(-5);
        return false;
      }
      return cfg.enable === 'true';
    };
  }
  if (cfg.signaled !== undefined) {
    ops.signaled = () => {
      push({ kind: 'signaled', tag: name, thread: threadId });
      return cfg.signaled === true;
    };
  }
  if (cfg.release) {
    ops.release = (f) => {
      push({
        kind: 'release',
        tag: name,
        thread: threadId,
        status: safe(() => (f.isSignaledFlag() ? 1 : 0)),
        error: safe(() => f.error),
      });
    };
  }
  if (cfg.deadline) {
    ops.setDeadline = (_f, ns) => {
      push({ kind: 'deadline', tag: name, thread: threadId, value: String(ns) });
    };
  }
  return ops;
}

function block(sab: SharedArrayBuffer): void {
  const w = new Int32Array(sab);
  Atomics.store(w, 1, 1);
  Atomics.notify(w, 1);
  Atomics.wait(w, 0, 0, 20_000);
}

async function handle(req: Request): Promise<unknown> {
  const a = req;
  switch (req.op) {
    case 'ping':
      return threadId;
    case 'contexts': {
      const out: string[] = [];
      for (const n of a.counts as number[]) out.push(String(DmaFence.contextAlloc(n)));
      return out;
    }
    case 'create': {
      const name = String(a.name);
      const cfg = a.ops as AgentOps | undefined;
      const f = new DmaFence(
        BigInt(a.context as string),
        BigInt(a.seqno as string),
        cfg ? makeOps(name, cfg) : undefined,
        { seqno64: a.seqno64 === true },
      );
      fences.set(name, f);
      return f.share();
    }
    case 'import': {
      const f = DmaFence.import(a.msg as SharedMessage);
      fences.set(String(a.name), f);
      return true;
    }
    case 'importTwice': {
      // Imports a message and reports what a second import of the same message does.
      const msg = a.msg as SharedMessage;
      const f = DmaFence.import(msg);
      fences.set(String(a.name), f);
      return safe(() => {
        DmaFence.import(msg);
        return 0;
      });
    }
    case 'tryImport':
      return safe(() => {
        const f = DmaFence.import(a.msg as SharedMessage);
        fences.set(String(a.name), f);
        return 0;
      });
    case 'share':
      return fence(a.name).share();
    case 'info': {
      const f = fence(a.name);
      return {
        context: String(f.context),
        seqno: String(f.seqno),
        signaled: f.isSignaledFlag(),
        timestamp: String(f.timestamp),
        status: f.getStatus(),
        driver: f.driverName,
        timeline: f.timelineName,
        deadline: String(f.deadline),
      };
    }
    case 'importMany': {
      const msgs = a.msgs as SharedMessage[];
      msgs.forEach((m, i) => {
        fences.set(`${String(a.prefix)}${i}`, DmaFence.import(m));
      });
      return msgs.length;
    }
    case 'addCallbackMany': {
      const prefix = String(a.prefix);
      for (let i = 0; i < (a.n as number); i++) {
        const tag = `${prefix}${i}`;
        fence(tag).addCallback((f) => {
          push({ kind: 'cb', tag, thread: threadId, status: safe(() => f.getStatus()) });
        });
      }
      return true;
    }
    case 'addCallback': {
      const tag = String(a.tag);
      const waitIn = a.waitIn === undefined ? undefined : String(a.waitIn);
      const r = safe(() => {
        const cb = fence(a.name).addCallback((f) => {
          if (waitIn !== undefined) fence(waitIn).waitSync({ timeout: 0 });
          push({
            kind: 'cb',
            tag,
            thread: threadId,
            status: safe(() => f.getStatus()),
            error: safe(() => f.error),
            inSignal: signalling,
          });
        });
        cbs.set(tag, cb);
        return 0;
      });
      return r;
    }
    case 'removeCallback': {
      const cb = cbs.get(String(a.tag));
      if (!cb) throw new Error('no such callback');
      return fence(a.name).removeCallback(cb);
    }
    case 'signal': {
      const before = events.length;
      signalling = true;
      let r: number | string;
      try {
        r = safe(() => {
          fence(a.name).signal();
          return 0;
        });
      } finally {
        signalling = false;
      }
      return { result: r, during: events.slice(before).map((e) => e.tag) };
    }
    case 'setError':
      return safe(() => {
        fence(a.name).setError(a.err as number);
        return 0;
      });
    case 'isSignaled':
      return fence(a.name).isSignaled();
    case 'status':
      return fence(a.name).getStatus();
    case 'setDeadline':
      fence(a.name).setDeadline(BigInt(a.ns as string));
      return true;
    case 'enable':
      fence(a.name).enableSwSignaling();
      return true;
    case 'dispose': {
      const f = fence(a.name);
      fences.delete(String(a.name));
      f.dispose();
      return true;
    }
    case 'waitSync':
      return safe(() => fence(a.name).waitSync({ timeout: a.timeout as number | undefined }));
    case 'waitSyncStamped': {
      // A blocking wait, then the clock as soon as it returns and the fence's signal time.
      const f = fence(a.name);
      const r = f.waitSync({ timeout: a.timeout as number | undefined });
      const woke = ktimeGetNs();
      return { r, woke: String(woke), ts: String(f.timestamp) };
    }
    case 'wait': {
      const ac = new AbortController();
      if (typeof a.abortAfter === 'number') setTimeout(() => ac.abort('test'), a.abortAfter);
      try {
        return await fence(a.name).wait({
          timeout: a.timeout as number | undefined,
          signal: ac.signal,
        });
      } catch (e) {
        return e instanceof DmaBufError ? e.code : String(e);
      }
    }
    case 'waitAnySync': {
      const list = (a.names as string[]).map(fence);
      return DmaFence.waitAnySync(list, { timeout: a.timeout as number | undefined });
    }
    case 'waitAny': {
      const list = (a.names as string[]).map(fence);
      return await DmaFence.waitAny(list, { timeout: a.timeout as number | undefined });
    }
    case 'events': {
      const out = events.splice(0, events.length);
      return out;
    }
    case 'waitEvents': {
      const n = a.n as number;
      if (events.length < n) {
        await new Promise<void>((resolve, reject) => {
          const t = setTimeout(
            () => reject(new Error(`only ${events.length} of ${n} events`)),
            (a.timeout as number | undefined) ?? 5000,
          );
          eventWaiter = {
            n,
            resolve: () => {
              clearTimeout(t);
              resolve();
            },
          };
        });
      }
      return events.splice(0, events.length);
    }
    case 'block':
      block(a.sab as SharedArrayBuffer);
      return true;
    case 'blockThenExit':
      // Blocks, then exits without returning to the event loop: mail that arrived meanwhile is
      // only handled by the thread's exit path.
      for (const f of fences.values()) f.dispose();
      fences.clear();
      block(a.sab as SharedArrayBuffer);
      process.exit(0);
      return true;
    case 'live':
      return domain().liveRecords();
    // ---- substrate operations (test/substrate.test.ts) ----
    case 'slabAlloc': {
      const d = domain();
      const out: [number, number][] = [];
      // n records, or (untilBytes) enough to grow the region past that size and then 200 more,
      // so that some slots lie well past the old size.
      const until = a.untilBytes as number | undefined;
      const alloc = (): void => {
        const s = d.alloc(RecordType.EXT);
        out.push([s, d.gen(s)]);
      };
      if (until === undefined) for (let i = 0; i < (a.n as number); i++) alloc();
      else {
        while (d.region.byteLength <= until) alloc();
        for (let i = 0; i < 200; i++) alloc();
      }
      return out;
    }
    case 'slabFree': {
      const d = domain();
      for (const s of a.slots as number[]) if (d.put(s)) d.free(s);
      return true;
    }
    case 'intern':
      return (a.names as string[]).map((n) => domain().intern(n));
    case 'name':
      return domain().name(a.nameId as number);
    case 'regionGrow': {
      // Attach a region, grow it, and write one word past the old end through a fresh view.
      const r = sabBackend.attachRegion(a.desc as RegionDescriptor);
      if (!r.grow(a.bytes as number)) return false;
      Atomics.store(r.i32, a.index as number, a.value as number);
      Atomics.store(r.i64, ((a.index as number) >> 1) + 1, BigInt(a.value as number) << 32n);
      return r.byteLength;
    }
    case 'lockCount': {
      // n increments of a plain (non-atomic) counter, each under the lock word.
      const r = sabBackend.attachRegion(a.desc as RegionDescriptor);
      const lock = a.lock as number;
      const ctr = a.counter as number;
      for (let i = 0; i < (a.n as number); i++) {
        lockWord(r, lock);
        const v = r.i32[ctr]!;
        r.i32[ctr] = v + 1;
        unlockWord(r, lock);
      }
      return true;
    }
    case 'setWordLater': {
      const r = sabBackend.attachRegion(a.desc as RegionDescriptor);
      setTimeout(() => {
        Atomics.store(r.i32, a.index as number, a.value as number);
        r.notify(a.index as number);
      }, a.ms as number);
      return true;
    }
    case 'now':
      return String(ktimeGetNs());
    case 'stub': {
      const s = DmaFence.getStub();
      try {
        return { ts: String(s.timestamp), context: String(s.context), slot: s._slot };
      } finally {
        s.dispose();
      }
    }
    case 'lockdep':
      lockdepEnable(a.on === true, 'record');
      return true;
    case 'reports':
      return lockdepReports();
    case 'waitUnderLock': {
      // Seed thread B: holds a lock and waits on a fence.
      const cls = new LockClass(String(a.lock));
      lockAcquire(cls);
      try {
        return safe(() => fence(a.name).waitSync({ timeout: a.timeout as number | undefined }));
      } finally {
        lockRelease(cls);
      }
    }
    case 'exit': {
      for (const f of fences.values()) {
        try {
          f.dispose();
        } catch {
          // Already gone.
        }
      }
      fences.clear();
      setImmediate(() => process.exit(0));
      return true;
    }
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
        code: e instanceof DmaBufError ? e.code : undefined,
        message: e instanceof Error ? e.message : String(e),
      }),
  );
});
// A driver op that throws surfaces as an uncaught exception; record it instead of dying.
process.on('uncaughtException', (e) => {
  push({ kind: 'uncaught', thread: threadId, value: e instanceof Error ? e.message : String(e) });
});
port.postMessage({ ready: threadId });
