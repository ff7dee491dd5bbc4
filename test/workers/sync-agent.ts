// A scriptable worker for the cross-thread sync_file / sw_sync / syncobj tests. The test thread
// sends { id, op, ...args } and gets { id, ok, value } or { id, ok: false, code, message }.
// Objects live in a map by name; imported objects arrive as SharedMessages.
import { parentPort, threadId } from 'node:worker_threads';
import {
  DrmSyncobj,
  SYNCOBJ_NO_INDEX,
  type SyncobjEventfd,
  syncobjTimeoutNs,
} from '../../src/drm-syncobj.js';
import type { SharedMessage } from '../../src/index.js';
import { DmaBufError } from '../../src/substrate/errno.js';
import { SwSyncTimeline } from '../../src/sw-sync.js';
import { SyncFile } from '../../src/sync-file.js';

interface Request {
  id: number;
  op: string;
  [k: string]: unknown;
}

type Obj = SwSyncTimeline | SyncFile | DrmSyncobj;

const port = parentPort;
if (!port) throw new Error('sync-agent must run in a worker');

const objs = new Map<string, Obj>();
const events: string[] = [];
const eventfds: SyncobjEventfd[] = [];

function get<T extends Obj>(name: unknown, cls: abstract new (...a: never[]) => T): T {
  const o = objs.get(String(name));
  if (!(o instanceof cls)) throw new Error(`agent has no ${cls.name} '${String(name)}'`);
  return o;
}

function put(name: unknown, o: Obj): void {
  objs.get(String(name))?.dispose();
  objs.set(String(name), o);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The blocking consumer loop of IGT's sync_multi_consumer (and the selftest's stress tests). */
function consumer(r: Request): number {
  const tl = get(r.timeline, SwSyncTimeline);
  const n = r.threads as number;
  const id = r.index as number;
  const iters = r.iters as number;
  const shared = new Int32Array(r.sab as SharedArrayBuffer);
  // shared[0]: the producer's counter; shared[1]: the semaphore the consumers post to.
  let bad = 0;
  for (let i = 0; i < iters; i++) {
    const point = i * n + id;
    using f = tl.createFence(point);
    if (!f.waitSync({ timeout: 5000 })) return -1;
    if (Atomics.load(shared, 0) !== point) bad++;
    Atomics.add(shared, 1, 1);
    Atomics.notify(shared, 1);
  }
  return bad;
}

/**
 * IGT's sync_multi_consumer_producer (and the selftest's sync_stress_parallelism): every thread
 * waits for its own points and advances the timeline itself.
 */
function consumerProducer(r: Request): number {
  const tl = get(r.timeline, SwSyncTimeline);
  const n = r.threads as number;
  const id = r.index as number;
  const iters = r.iters as number;
  const shared = new Int32Array(r.sab as SharedArrayBuffer);
  let bad = 0;
  for (let i = 0; i < iters; i++) {
    const point = i * n + id;
    using f = tl.createFence(point);
    if (!f.waitSync({ timeout: 5000 })) return -1;
    if (Atomics.load(shared, 0) !== point) bad++;
    Atomics.add(shared, 0, 1);
    tl.inc(1);
  }
  return bad;
}

async function run(r: Request): Promise<unknown> {
  switch (r.op) {
    case 'thread':
      return threadId;
    case 'import.timeline':
      put(r.name, SwSyncTimeline.import(r.msg as SharedMessage));
      return true;
    case 'import.file':
      put(r.name, SyncFile.import(r.msg as SharedMessage));
      return true;
    case 'import.syncobj':
      put(r.name, DrmSyncobj.import(r.msg as SharedMessage));
      return true;
    case 'dispose':
      objs.get(String(r.name))?.dispose();
      objs.delete(String(r.name));
      return true;
    case 'share':
      return objs.get(String(r.name))?.share();
    case 'timeline.inc':
      if (r.delayMs) await sleep(r.delayMs as number);
      get(r.name, SwSyncTimeline).inc((r.n as number | undefined) ?? 1);
      return true;
    case 'timeline.value':
      return get(r.name, SwSyncTimeline).value;
    case 'timeline.createFence': {
      const f = get(r.name, SwSyncTimeline).createFence(r.value as number);
      if (r.as) {
        put(r.as, f);
        return true;
      }
      const msg = f.share();
      f.dispose();
      return msg;
    }
    case 'file.wait': {
      const f = get(r.name, SyncFile);
      const ok = r.sync
        ? f.waitSync({ timeout: r.timeout as number })
        : await f.wait({ timeout: r.timeout as number });
      return { ok, status: f.status() };
    }
    case 'file.ready': {
      const f = get(r.name, SyncFile);
      await f.ready;
      return f.status();
    }
    case 'file.info':
      return get(r.name, SyncFile).info();
    case 'file.merge': {
      const m = get(r.a, SyncFile).merge(get(r.b, SyncFile), r.mergeName as string);
      const msg = m.share();
      m.dispose();
      return msg;
    }
    case 'consumer':
      return consumer(r);
    case 'consumerProducer':
      return consumerProducer(r);
    case 'syncobj.timelineSignal':
      if (r.delayMs) await sleep(r.delayMs as number);
      get(r.name, DrmSyncobj).timelineSignal(BigInt(r.point as string));
      return true;
    case 'syncobj.signal':
      if (r.delayMs) await sleep(r.delayMs as number);
      get(r.name, DrmSyncobj).signal();
      return true;
    case 'syncobj.importFile': {
      if (r.delayMs) await sleep(r.delayMs as number);
      get(r.name, DrmSyncobj).importSyncFile(get(r.file, SyncFile), BigInt(r.point as string));
      return true;
    }
    case 'syncobj.query':
      return String(get(r.name, DrmSyncobj).query((r.flags as number | undefined) ?? 0));
    case 'syncobj.wait': {
      const list = (r.names as string[]).map((n) => get(n, DrmSyncobj));
      const opts = {
        points: (r.points as string[]).map((p) => BigInt(p)),
        flags: r.flags as number,
        timeoutNs: syncobjTimeoutNs(r.timeoutMs as number),
      };
      const idx = r.sync ? DrmSyncobj.waitSync(list, opts) : await DrmSyncobj.wait(list, opts);
      return idx === SYNCOBJ_NO_INDEX ? -1 : idx;
    }
    case 'syncobj.eventfd': {
      const tag = String(r.tag);
      eventfds.push(
        get(r.name, DrmSyncobj).eventfd(BigInt(r.point as string), r.flags as number, () =>
          events.push(tag),
        ),
      );
      return true;
    }
    case 'events': {
      const deadline = Date.now() + ((r.timeout as number | undefined) ?? 5000);
      while (events.length < ((r.n as number | undefined) ?? 0) && Date.now() < deadline) {
        await sleep(2);
      }
      return events.splice(0);
    }
    case 'exit':
      for (const e of eventfds) e.cancel();
      for (const o of objs.values()) o.dispose();
      objs.clear();
      setImmediate(() => port?.close());
      return true;
    default:
      throw new Error(`unknown op ${r.op}`);
  }
}

port.on('message', (r: Request) => {
  run(r).then(
    (value) => port.postMessage({ id: r.id, ok: true, value }),
    (e: unknown) =>
      port.postMessage({
        id: r.id,
        ok: false,
        code: e instanceof DmaBufError ? e.code : undefined,
        message: e instanceof Error ? e.message : String(e),
      }),
  );
});
port.postMessage({ ready: threadId });
