/**
 * dma_fence: a one-shot completion event shared between threads (drivers/dma-buf/dma-fence.c).
 *
 * A fence belongs to a context (a timeline) and carries a 64-bit seqno ordering it within that
 * context. It starts unsignalled and is signalled exactly once, recording a monotonic timestamp;
 * an error may be set before that. Callbacks run when it signals, waits block (synchronously)
 * or suspend (asynchronously) until it does.
 *
 * How the kernel's model maps onto threads:
 * - The fence's state (flags, error, seqno, timestamp, deadline, reference count, the list of
 *   internal dependents) is a record in shared memory; every thread that imports the fence
 *   sees and changes the same record. The fence lock is a word in that record.
 * - Callbacks are functions, which cannot cross threads. A callback runs in the thread that
 *   added it, in the order added: synchronously inside `signal()` when that thread signals,
 *   otherwise from its event loop after the signaller rings its mailbox.
 * - Driver ops (`enableSignaling`, `signaled`, `release`, `setDeadline`) run in the thread that
 *   created the fence (its owner). A waiter elsewhere sets ENABLE_SIGNAL and asks the owner to
 *   arm the fence before it sleeps.
 * - Arrays and chains complete through dependents kept in shared memory, run by whichever
 *   thread signals the member, after the member's own signalling is done (the kernel defers
 *   that work to irq_work for the same reason: no nesting of fence locks).
 *
 * @module
 */
import {
  dmaFenceBeginSignalling,
  dmaFenceEndSignalling,
  dmaFenceMightWait,
  lockdepEnabled,
  mightSleep,
  withNoSleep,
} from './lockdep.js';
import { ktimeGetNs, nowMs } from './substrate/clock.js';
import {
  type Domain,
  domain,
  Mail,
  onMailReap,
  onThreadReaped,
  R_FLAGS,
  R_GEN,
  R_REF,
  RecordType,
  refCount,
  TYPE_MASK,
  TYPE_SHIFT,
} from './substrate/domain.js';
import { DmaBufError, ERRNO, MAX_ERRNO } from './substrate/errno.js';
import { claim, HandleKind, type SharedMessage, SharedObject } from './substrate/handle.js';
import { lockWord, unlockWord } from './substrate/lock.js';
import {
  keepAlive,
  throwIfAborted,
  timeLeft,
  type WaitTarget,
  waitFor,
  waitUntilAsync,
} from './substrate/waiter.js';

// ---- record layout ------------------------------------------------------------------------

/** @internal Words of a fence record (see domain.ts for words 0..2). */
export const F = {
  FLAGS: R_FLAGS,
  GEN: R_GEN,
  ERROR: 3,
  /** 64-bit words, as offsets from the record's first 64-bit index. */
  CONTEXT64: 2,
  SEQNO64: 3,
  TIMESTAMP64: 4,
  DEADLINE64: 5,
  LOCK: 12,
  /** Word 13 is unused: sleepers announce themselves with the WAITERS bit of FLAGS. */
  /** Head of the dependent list, as node slot + 1 (0: empty). */
  DEPS: 14,
  /** Thread with callbacks: 0 none, t + 1 one thread, -1 several. */
  CBTHREAD: 15,
  /** Owner thread + 1, for fences with ops that must run in the owner (0: none). */
  OWNER: 16,
  NAMES: 17,
  /** Words 18..23 belong to the fence kind (array, chain). */
  KIND0: 18,
} as const;

/** Bit numbers of the fence flags, as in `enum dma_fence_flag_bits` (6.x). */
export const DMA_FENCE_FLAG = {
  SEQNO64_BIT: 0,
  SIGNALED_BIT: 1,
  TIMESTAMP_BIT: 2,
  ENABLE_SIGNAL_BIT: 3,
} as const;

const SEQNO64 = 1 << 0;
const SIGNALED = 1 << 1;
const TIMESTAMP = 1 << 2;
const ENABLE = 1 << 3;
const DEADLINE_SET = 1 << 4;
/** Set by every thread that sleeps on the flags word; the signaller wakes them if it is set. */
const WAITERS = 1 << 5;
const OP_ENABLE = 1 << 8;
const OP_SIGNALED = 1 << 9;
const OP_DEADLINE = 1 << 10;
const OP_RELEASE = 1 << 11;
const KIND_SHIFT = 12;
const KIND_MASK = 0xf << KIND_SHIFT;

// Dependent node words.
const N_NEXT = 3;
const N_DEP = 4;
const N_TARGET = 5;
const N_TARGET_GEN = 6;
const N_ARG = 7;

const MULTI = -1;

/** @internal Fence kinds; 0 is a plain fence. */
export const FenceKindId = { PLAIN: 0, ARRAY: 1, CHAIN: 2, STUB: 3 } as const;

/**
 * The driver side of a fence (`struct dma_fence_ops`). Every op runs in the thread that created
 * the fence.
 */
export interface DmaFenceOps {
  /** Mandatory: the driver's name (shared with every thread; at most 64 bytes). */
  readonly driverName: string;
  /** Mandatory: the timeline's name (shared with every thread; at most 64 bytes). */
  readonly timelineName: string;
  /**
   * Optional. Called at most once, before anyone sleeps on the fence: arm whatever will
   * signal it. Return false when that is impossible or already done; the core then signals
   * the fence (set an error first if it failed). Runs in the owner thread.
   */
  enableSignaling?(fence: DmaFence): boolean;
  /**
   * Optional. A poll: true once the fence has completed (and forever after). May set an error
   * before returning true. Only the owner thread polls it; elsewhere only the flag counts.
   */
  signaled?(fence: DmaFence): boolean;
  /** Optional. Runs once, in the owner thread, when the last reference is gone. */
  release?(fence: DmaFence): void;
  /**
   * Optional. A hint that someone waits for the fence by `deadlineNs` (monotonic clock). Only
   * the earliest deadline matters and a past one means now; ignoring it is valid.
   */
  setDeadline?(fence: DmaFence, deadlineNs: bigint): void;
}

/** Options of the waits. */
export interface DmaFenceWaitOptions {
  /** Milliseconds; `Infinity` (the default) waits forever, 0 only polls. */
  timeout?: number;
  /** Makes the wait interruptible: aborting it throws `ERESTARTSYS`. */
  signal?: AbortSignal;
}

const QUEUED = 0;
const FIRED = 1;
const REMOVED = 2;

/** A registered callback (`struct dma_fence_cb`); pass it to `removeCallback`. */
export interface DmaFenceCb {
  /**
   * The fence, as a borrowed handle (valid while the fence exists; cannot be disposed). It is
   * the handle callbacks receive: the handle that added them may have been disposed since, e.g.
   * when its release is what signalled the fence, and holding it would keep a lost handle from
   * the safety net.
   */
  readonly fence: DmaFence;
  readonly func: (fence: DmaFence) => void;
  /** 0 queued, 1 fired, 2 removed. */
  state: number;
}

/** The registration record; its borrowed handle is made only when someone asks for it. */
class Callback implements DmaFenceCb {
  declare state: number;
  declare readonly func: (fence: DmaFence) => void;
  declare private readonly lf: LocalFence;
  /** @internal */ declare readonly slot: number;
  /** @internal */ declare readonly gen: number;
  constructor(func: (fence: DmaFence) => void, lf: LocalFence, slot: number, gen: number) {
    this.state = QUEUED;
    this.func = func;
    this.lf = lf;
    this.slot = slot;
    this.gen = gen;
  }

  get fence(): DmaFence {
    const lf = this.lf;
    // The local entry is recycled for later fences in the same slot: only trust its cached
    // handle while it still describes this registration's fence.
    if (lf.gen === this.gen) return borrowed(lf, this.slot);
    return wrapFence(this.slot, this.gen, false);
  }
}

// ---- per-thread state -----------------------------------------------------------------------

/** What this thread keeps for one fence: its callbacks here, and the ops if it is the owner. */
interface LocalFence {
  gen: number;
  cbs: DmaFenceCb[];
  ops: DmaFenceOps | undefined;
  enabled: boolean;
  borrowed: DmaFence | undefined;
}

const local: (LocalFence | undefined)[] = [];
/** The shared empty callback list; never pushed to (see addCallbackSlot). */
const NO_CBS: DmaFenceCb[] = [];
let pendingCallbacks = 0;
let marked = false;
let idleCheck = false;
let signalDepth = 0;
const deferred: number[] = [];
let mailboxReady = false;

/** @internal Kind hooks: shared-memory behaviour of containers, callable from any thread. */
export interface FenceKindHooks {
  /** Wraps a record in a handle of the right class. */
  wrap(slot: number, gen: number, owned: boolean): DmaFence;
  /** Polls completion from shared state (any thread). */
  signaled?(d: Domain, slot: number): boolean;
  /** Arms completion (any thread); false when already complete: the core then signals. */
  enable?(d: Domain, slot: number, gen: number): boolean;
  /** Drops what the container holds (members), before the record is freed. */
  release?(d: Domain, slot: number): void;
  /** Forwards a deadline hint to members. */
  setDeadline?(d: Domain, slot: number, deadlineNs: bigint): void;
}

const kinds: FenceKindHooks[] = [];

/** @internal Registers the hooks of a fence kind. */
export function registerFenceKind(id: number, hooks: FenceKindHooks): void {
  kinds[id] = hooks;
}

/** The hooks of the kind in `flags`: none for plain fences and stubs, an error if unloaded. */
function hooksOf(flags: number): FenceKindHooks | undefined {
  const kind = (flags & KIND_MASK) >> KIND_SHIFT;
  if (kind === FenceKindId.PLAIN || kind === FenceKindId.STUB) return undefined;
  const hooks = kinds[kind];
  if (!hooks) throw missingKind(`fence kind ${kind}`);
  return hooks;
}

/**
 * @internal Work run (in the signalling thread, after the signal completes) when a fence that a
 * dependent node hangs on signals: `(targetSlot, targetGen, arg, sourceSlot)`.
 */
export type DependentFn = (
  d: Domain,
  target: number,
  targetGen: number,
  arg: number,
  source: number,
) => void;
const dependents: DependentFn[] = [];

/**
 * @internal Fixed ids of the dependent kinds. They are stored in shared memory and run by
 * whichever thread signals, so an id must mean the same function in every thread: ids are
 * assigned here, not in module load order.
 */
export const DependentId = { ARRAY: 0, CHAIN: 1 } as const;

/** @internal Registers the function of dependent kind `id`. */
export function registerDependent(id: number, fn: DependentFn): number {
  dependents[id] = fn;
  return id;
}

/** The message for a thread that meets a container kind whose module it never loaded. */
function missingKind(what: string): DmaBufError {
  return new DmaBufError(
    'ENOSYS',
    `${what} is not registered in this thread: import 'dmabuf' (or its container modules) here`,
  );
}

function getLocal(slot: number, gen: number): LocalFence {
  let lf = local[slot];
  if (lf && lf.gen !== gen) {
    // The slot's previous fence is gone; whatever of it is still queued here has fired.
    if (lf.cbs.length > 0) runLocal(slot, lf.gen);
    // Reuse the entry: slots are recycled last-in first-out, so this saves an allocation per
    // fence on the hot path.
    lf.gen = gen;
    lf.ops = undefined;
    lf.enabled = false;
    lf.borrowed = undefined;
  }
  if (!lf) {
    lf = { gen, cbs: NO_CBS, ops: undefined, enabled: false, borrowed: undefined };
    // Kept dense: a store far past the end would turn the array into a slow dictionary, and
    // slots come from anywhere in the slab once it has grown.
    while (local.length < slot) local.push(undefined);
    local[slot] = lf;
  }
  return lf;
}

function borrowed(lf: LocalFence, slot: number): DmaFence {
  if (!lf.borrowed) lf.borrowed = wrapFence(slot, lf.gen, false);
  return lf.borrowed;
}

function ensureMailbox(d: Domain): number {
  const t = d.threadIndex();
  if (!mailboxReady) {
    mailboxReady = true;
    process.once('exit', failOwnedFences);
    d.onMail(Mail.CALLBACK, runLocalMail);
    d.onMail(Mail.ENABLE, runEnableOp);
    d.onMail(Mail.DEADLINE, runDeadlineOp);
    d.onMail(Mail.RELEASE, runReleaseOp);
    d.onMailOverflow(rescanLocal);
    d.listen();
  }
  return t;
}

/**
 * The owner thread is leaving: its driver ops can never run again, so a fence it owns that
 * needs them to complete (an `enableSignaling` or `signaled` op) and has not signalled never
 * would. Like a driver that goes away, complete them with an error
 * (-ENODEV) so that every waiter in another thread wakes up. Runs on a normal thread exit;
 * a worker killed with `terminate()` skips it.
 */
function failOwnedFences(): void {
  const d = domain();
  for (let slot = 0; slot < local.length; slot++) {
    const lf = local[slot];
    if (!lf?.ops || d.gen(slot) !== lf.gen) continue;
    const b = d.base(slot);
    const flags = Atomics.load(d.i32, b + F.FLAGS);
    // Only fences whose completion needs the owner's ops (arming or polling); a fence with
    // just a release or deadline op can still be signalled by any thread.
    if ((flags & SIGNALED) !== 0 || (flags & (OP_ENABLE | OP_SIGNALED)) === 0) continue;
    Atomics.store(d.i32, b + F.ERROR, -ERRNO.ENODEV);
    signalSlot(d, slot, undefined);
  }
}

/**
 * Scans for the fences thread `t` owned when it was reaped (it ended without leaving): those
 * whose completion needs its ops complete with -ENODEV, as {@linkcode failOwnedFences} would
 * have done in the thread itself.
 */
function failReapedOwner(t: number): void {
  const d = domain();
  const bump = d.recordsInUse();
  for (let slot = 0; slot < bump; slot++) {
    const b = d.base(slot);
    const flags = Atomics.load(d.i32, b + F.FLAGS);
    if ((flags & TYPE_MASK) >>> TYPE_SHIFT !== RecordType.FENCE) continue;
    if ((flags & SIGNALED) !== 0 || (flags & (OP_ENABLE | OP_SIGNALED)) === 0) continue;
    if (Atomics.load(d.i32, b + F.OWNER) !== t + 1) continue;
    const gen = d.gen(slot);
    if (!d.tryGet(slot, gen, RecordType.FENCE)) continue;
    try {
      if ((Atomics.load(d.i32, b + F.FLAGS) & SIGNALED) === 0) {
        Atomics.store(d.i32, b + F.ERROR, -ERRNO.ENODEV);
        signalSlot(d, slot, undefined);
      }
    } finally {
      putFence(slot);
    }
  }
}

// What a reaped thread left queued: a callback notification carries a reference; a release
// request is a fence whose owner's release op can never run now.
onMailReap(Mail.CALLBACK, (slot) => putFence(slot));
onMailReap(Mail.RELEASE, (slot, gen) => {
  const d = domain();
  if (d.gen(slot) === gen) freeFence(d, slot);
});
onThreadReaped(failReapedOwner);

/** Runs this thread's callbacks of fence (slot, gen), which has signalled. */
function runLocal(slot: number, gen: number): void {
  const lf = local[slot];
  if (!lf || lf.gen !== gen || lf.cbs.length === 0) return;
  const list = lf.cbs;
  lf.cbs = NO_CBS;
  const cookie = dmaFenceBeginSignalling();
  try {
    if (lockdepEnabled()) withNoSleep('dma_fence callback', () => runList(list));
    else runList(list);
  } finally {
    dmaFenceEndSignalling(cookie);
  }
}

/** A CALLBACK message: it carries a reference (see postCallback), dropped once handled. */
function runLocalMail(slot: number, gen: number): void {
  try {
    runLocal(slot, gen);
  } finally {
    putFence(slot);
  }
}

function runList(list: DmaFenceCb[]): void {
  for (let i = 0; i < list.length; i++) {
    const cb = list[i]!;
    if (cb.state !== QUEUED) continue;
    cb.state = FIRED;
    settlePending(-1);
    try {
      // A callback that declares no parameter is not handed a fence: making the borrowed
      // handle is most of the cost of a callback on the in-thread path.
      if (cb.func.length === 0) (cb.func as () => void)();
      else cb.func(cb.fence);
    } catch (e) {
      // A throwing callback must not stop the others; its error surfaces as uncaught.
      queueMicrotask(() => {
        throw e;
      });
    }
  }
}

/**
 * Counts this thread's pending callbacks. While any are pending the thread is kept alive and
 * marked in the thread table, so that a broadcast (a fence with callbacks in several threads)
 * rings it. The mark is set at once but cleared lazily, at the end of the current job: a tight
 * loop of add/signal pairs then pays for neither the shared store nor the timer ref/unref.
 */
function settlePending(delta: number): void {
  pendingCallbacks += delta;
  if (pendingCallbacks > 0) {
    if (!marked) {
      marked = true;
      domain().setPending(true);
      keepAlive.acquire();
    }
  } else if (marked && !idleCheck) {
    idleCheck = true;
    queueMicrotask(unmarkIfIdle);
  }
}

function unmarkIfIdle(): void {
  idleCheck = false;
  if (pendingCallbacks === 0 && marked) {
    marked = false;
    domain().setPending(false);
    keepAlive.release();
  }
}

function runEnableOp(slot: number, gen: number): void {
  const d = domain();
  const lf = local[slot];
  if (!lf || lf.gen !== gen || !lf.ops || lf.enabled) return;
  lf.enabled = true;
  // Not on a fence already released (reference count 0, its release message still queued).
  if (!d.isLive(slot, gen, RecordType.FENCE)) return;
  if ((Atomics.load(d.at32(slot), d.base(slot) + F.FLAGS) & SIGNALED) !== 0) return;
  const ok = lf.ops.enableSignaling ? lf.ops.enableSignaling(borrowed(lf, slot)) : true;
  if (!ok) signalSlot(d, slot, undefined);
}

function runDeadlineOp(slot: number, gen: number): void {
  const d = domain();
  const lf = local[slot];
  if (!lf || lf.gen !== gen || !lf.ops?.setDeadline || d.gen(slot) !== gen) return;
  if ((Atomics.load(d.at32(slot), d.base(slot) + F.FLAGS) & SIGNALED) !== 0) return;
  lf.ops.setDeadline(borrowed(lf, slot), Atomics.load(d.at64(slot), d.base64(slot) + F.DEADLINE64));
}

function runReleaseOp(slot: number, gen: number): void {
  const d = domain();
  const lf = local[slot];
  if (d.gen(slot) !== gen) return;
  try {
    if (lf && lf.gen === gen) lf.ops?.release?.(borrowed(lf, slot));
  } finally {
    freeFence(d, slot);
  }
}

/** After a mailbox overflow: find every event meant for this thread by scanning. */
function rescanLocal(): void {
  const d = domain();
  for (let slot = 0; slot < local.length; slot++) {
    const lf = local[slot];
    if (!lf) continue;
    const b = d.base(slot);
    const gone = d.gen(slot) !== lf.gen;
    const flags = gone ? SIGNALED : Atomics.load(d.i32, b + F.FLAGS);
    if (lf.cbs.length > 0 && (flags & SIGNALED) !== 0) runLocal(slot, lf.gen);
    if (gone || !lf.ops) continue;
    if ((flags & ENABLE) !== 0 && !lf.enabled) runEnableOp(slot, lf.gen);
    if ((flags & DEADLINE_SET) !== 0) runDeadlineOp(slot, lf.gen);
    if (refCount(Atomics.load(d.i32, b + R_REF)) === 0 && (flags & OP_RELEASE) !== 0) {
      runReleaseOp(slot, lf.gen);
    }
  }
}

// ---- core operations on records -----------------------------------------------------------------

/**
 * @internal Signals fence `slot`; false if it was already signalled (the kernel's -EINVAL).
 * Runs this thread's callbacks, wakes sleepers, rings the mailboxes of other threads with
 * callbacks, and then runs the dependents (containers) once the outermost signal is done.
 */
export function signalSlot(d: Domain, slot: number, ts: bigint | undefined): boolean {
  const b = d.base(slot);
  const i32 = d.i32;
  const cookie = dmaFenceBeginSignalling();
  try {
    lockWord(d.region, b + F.LOCK);
    // Only signallers set SIGNALED, and they hold the lock: test, then set in one step below.
    // A plain read: the lock orders it after any earlier signaller's write.
    if ((i32[b + F.FLAGS]! & SIGNALED) !== 0) {
      unlockWord(d.region, b + F.LOCK);
      return false;
    }
    // DEPS changes only under the lock: plain accesses suffice there.
    const deps = i32[b + F.DEPS]!;
    if (deps !== 0) i32[b + F.DEPS] = 0;
    Atomics.or(i32, b + F.FLAGS, SIGNALED);
    unlockWord(d.region, b + F.LOCK);
    // Callback threads register without the lock (see addCallbackSlot): read the word only
    // after SIGNALED is visible.
    let cbt = Atomics.load(i32, b + F.CBTHREAD);
    if (cbt !== 0) cbt = Atomics.exchange(i32, b + F.CBTHREAD, 0);
    // As in the kernel: SIGNALED first, then the timestamp and its TIMESTAMP bit (readers that
    // see SIGNALED without it wait for it), then the wake-ups. The timestamp comes as late as
    // that allows: on these VMs a woken thread runs only once its waker stops (see
    // waiter.ts), so each step between the timestamp and the end of the signaller's turn
    // adds to what a sleeping waiter sees as the wake-up latency.
    d.i64[(b >> 1) + F.TIMESTAMP64] = ts ?? ktimeGetNs();
    // The same atomic update reports whether anyone sleeps on the word (see WaitTarget.mark).
    if ((Atomics.or(i32, b + F.FLAGS, TIMESTAMP) & WAITERS) !== 0) d.region.notify(b + F.FLAGS);
    // Nothing hangs on the fence: nothing more to do (and nothing was queued for later).
    if ((deps | cbt) === 0) return true;
    signalDepth++;
    try {
      for (let n = deps; n !== 0; ) {
        const nb = d.base(n - 1);
        const ni = d.i32;
        deferred.push(
          Atomics.load(ni, nb + N_DEP),
          Atomics.load(ni, nb + N_TARGET),
          Atomics.load(ni, nb + N_TARGET_GEN),
          Atomics.load(ni, nb + N_ARG),
          slot,
        );
        const next = Atomics.load(ni, nb + N_NEXT);
        d.free(n - 1);
        n = next;
      }
      if (cbt !== 0) deliver(d, slot, d.peekGen(slot), cbt);
    } finally {
      signalDepth--;
    }
    if (signalDepth === 0 && deferred.length !== 0) runDeferred(d);
    return true;
  } finally {
    dmaFenceEndSignalling(cookie);
  }
}

function deliver(d: Domain, slot: number, gen: number, cbt: number): void {
  const self = d.peekThreadIndex();
  if (cbt === MULTI) {
    d.forEachThread((t) => {
      if (t === self) runLocal(slot, gen);
      else postCallback(d, t, slot, gen);
    });
  } else if (cbt - 1 === self) {
    runLocal(slot, gen);
  } else {
    postCallback(d, cbt - 1, slot, gen);
  }
}

/**
 * Tells thread `t` to run its callbacks of the fence. The message carries a reference, so the
 * fence still exists when they run, as it does for callbacks run inside the signal: otherwise
 * a signaller that drops its reference at once (or the -EDEADLK release) would leave the
 * callbacks a handle to a freed fence.
 */
function postCallback(d: Domain, t: number, slot: number, gen: number): void {
  d.get(slot);
  if (!d.post(t, Mail.CALLBACK, slot, gen)) putFence(slot);
}

function runDeferred(d: Domain): void {
  signalDepth++;
  try {
    // A queue, not recursion: a chain of containers completes iteratively.
    for (let i = 0; i < deferred.length; i += 5) {
      const fn = dependents[deferred[i]!];
      try {
        if (!fn) throw missingKind(`fence dependent kind ${deferred[i]}`);
        fn(d, deferred[i + 1]!, deferred[i + 2]!, deferred[i + 3]!, deferred[i + 4]!);
      } catch (e) {
        // One failing dependent must not stop the others or leave stale entries queued.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  } finally {
    deferred.length = 0;
    signalDepth--;
  }
}

/**
 * @internal Hangs a dependent on fence `slot`: `dep` runs with (target, targetGen, arg) when it
 * signals. Returns false (and adds nothing) when the fence has already signalled.
 */
export function addDependent(
  d: Domain,
  slot: number,
  dep: number,
  target: number,
  targetGen: number,
  arg: number,
): boolean {
  const b = d.base(slot);
  if ((Atomics.load(d.i32, b + F.FLAGS) & SIGNALED) !== 0) return false;
  enableSlot(d, slot, d.gen(slot));
  const n = d.alloc(RecordType.NODE);
  const nb = d.base(n);
  // The allocation may have grown the region: take the views only now.
  const i32 = d.i32;
  Atomics.store(i32, nb + N_DEP, dep);
  Atomics.store(i32, nb + N_TARGET, target);
  Atomics.store(i32, nb + N_TARGET_GEN, targetGen);
  Atomics.store(i32, nb + N_ARG, arg);
  lockWord(d.region, b + F.LOCK);
  if ((Atomics.load(i32, b + F.FLAGS) & SIGNALED) !== 0) {
    unlockWord(d.region, b + F.LOCK);
    d.free(n);
    return false;
  }
  // Append at the tail so dependents run in the order they were added.
  const head = Atomics.load(i32, b + F.DEPS);
  if (head === 0) {
    Atomics.store(i32, b + F.DEPS, n + 1);
  } else {
    let last = head - 1;
    for (let next = Atomics.load(i32, d.base(last) + N_NEXT); next !== 0; ) {
      last = next - 1;
      next = Atomics.load(i32, d.base(last) + N_NEXT);
    }
    Atomics.store(i32, d.base(last) + N_NEXT, n + 1);
  }
  unlockWord(d.region, b + F.LOCK);
  return true;
}

/**
 * @internal Where a thread sleeps until fence `slot` changes: its flags word, announced with the
 * WAITERS bit there, which the signaller's own update of the word reports (see signalSlot).
 */
export function fenceWaitTarget(d: Domain, slot: number): WaitTarget {
  const w = d.base(slot) + F.FLAGS;
  return { region: d.region, index: w, sleepers: w, mark: WAITERS };
}

/** @internal The enable step (`__dma_fence_enable_signaling`), from any thread. */
export function enableSlot(d: Domain, slot: number, gen: number): void {
  const b = d.base(slot);
  // A plain peek (see Domain.peekGen); the atomic `or` below is what decides.
  if ((d.i32[b + F.FLAGS]! & (ENABLE | SIGNALED)) !== 0) return;
  const old = Atomics.or(d.i32, b + F.FLAGS, ENABLE);
  if ((old & (ENABLE | SIGNALED)) !== 0) return;
  const hooks = hooksOf(old);
  if (hooks?.enable && !hooks.enable(d, slot, gen)) {
    signalSlot(d, slot, undefined);
    return;
  }
  if ((old & OP_ENABLE) !== 0) {
    const owner = Atomics.load(d.i32, b + F.OWNER) - 1;
    if (owner === d.peekThreadIndex()) runEnableOp(slot, gen);
    else d.post(owner, Mail.ENABLE, slot, gen);
  }
}

/** @internal Polls a fence (`dma_fence_is_signaled`): flag, container state, owner's op. */
export function isSignaledSlot(d: Domain, slot: number, gen: number): boolean {
  const flags = Atomics.load(d.at32(slot), d.base(slot) + F.FLAGS);
  if ((flags & SIGNALED) !== 0) return true;
  const hooks = hooksOf(flags);
  let done = hooks?.signaled ? hooks.signaled(d, slot) : false;
  if (!done && (flags & OP_SIGNALED) !== 0) {
    const lf = local[slot];
    if (lf?.gen === gen && lf.ops?.signaled) done = lf.ops.signaled(borrowed(lf, slot));
  }
  if (done) signalSlot(d, slot, undefined);
  return done;
}

/** @internal Drops a reference on a fence record; releases it when it was the last. */
export function putFence(slot: number): void {
  const d = domain();
  if (d.put(slot)) releaseFence(d, slot);
}

function releaseFence(d: Domain, slot: number): void {
  const b = d.base(slot);
  // A plain read: the last reference is gone, and the atomic put that dropped it orders it.
  const flags = d.i32[b + F.FLAGS]!;
  if (
    (flags & SIGNALED) === 0 &&
    (Atomics.load(d.i32, b + F.DEPS) !== 0 || Atomics.load(d.i32, b + F.CBTHREAD) !== 0)
  ) {
    // Released with callbacks still pending: they run, and see -EDEADLK (dma_fence_release).
    // The fence is held while it signals: callbacks delivered to other threads take their own
    // references, and the last of those finishes the release.
    d.get(slot);
    Atomics.store(d.i32, b + F.ERROR, -35);
    signalSlot(d, slot, undefined);
    if (!d.put(slot)) return;
  }
  hooksOf(flags)?.release?.(d, slot);
  if ((flags & OP_RELEASE) !== 0) {
    const owner = Atomics.load(d.i32, b + F.OWNER) - 1;
    const gen = d.gen(slot);
    if (owner === d.peekThreadIndex()) runReleaseOp(slot, gen);
    // An owner that has left cannot run the op any more; free the record here.
    else if (!d.post(owner, Mail.RELEASE, slot, gen)) freeFence(d, slot);
    return;
  }
  freeFence(d, slot);
}

function freeFence(d: Domain, slot: number): void {
  const lf = local[slot];
  if (lf?.ops && lf.gen === d.peekGen(slot)) {
    lf.ops = undefined;
    lf.borrowed = undefined;
  }
  d.free(slot);
}

// The name pair of the last fence created here: most fences of a thread share their names.
let lastDriver: string | undefined;
let lastTimeline: string | undefined;
let lastNames = 0;

/** @internal Allocates and initialises a fence record (`dma_fence_init` / `init64`). */
export function initFenceRecord(
  d: Domain,
  kind: number,
  context: bigint,
  seqno: bigint,
  driverName: string,
  timelineName: string,
  seqno64: boolean,
): number {
  let names = lastNames;
  if (driverName !== lastDriver || timelineName !== lastTimeline) {
    names = (d.intern(driverName) << 16) | d.intern(timelineName);
    lastDriver = driverName;
    lastTimeline = timelineName;
    lastNames = names;
  }
  const slot = d.alloc(RecordType.FENCE);
  const b = d.base(slot);
  const b64 = b >> 1;
  // Plain stores: no other thread can see the record before it is published (by a message or
  // an atomic store of its slot elsewhere), and publication orders these writes before it.
  // A BigInt64Array store wraps to 64 bits by itself; the readers take them back unsigned.
  d.i64[b64 + F.CONTEXT64] = context;
  d.i64[b64 + F.SEQNO64] = seqno;
  d.i32[b + F.NAMES] = names;
  d.i32[b + F.FLAGS] =
    (RecordType.FENCE << TYPE_SHIFT) | (kind << KIND_SHIFT) | (seqno64 ? SEQNO64 : 0);
  return slot;
}

/** Makes this thread the owner of a new fence that has ops: they will run here. */
function attachOps(d: Domain, slot: number, gen: number, ops: DmaFenceOps): void {
  if (!(ops.enableSignaling || ops.signaled || ops.release || ops.setDeadline)) return;
  const t = ensureMailbox(d);
  getLocal(slot, gen).ops = ops;
  const b = d.base(slot);
  Atomics.store(d.i32, b + F.OWNER, t + 1);
  Atomics.or(
    d.i32,
    b + F.FLAGS,
    (ops.enableSignaling ? OP_ENABLE : 0) |
      (ops.signaled ? OP_SIGNALED : 0) |
      (ops.setDeadline ? OP_DEADLINE : 0) |
      (ops.release ? OP_RELEASE : 0),
  );
}

function checkU64(v: unknown, what: string): bigint {
  // One truncation instead of two comparisons: the value is in range when it survives it.
  if (typeof v !== 'bigint' || BigInt.asUintN(64, v) !== v) {
    throw new DmaBufError('EINVAL', `${what} must be a bigint in [0, 2^64)`);
  }
  return v;
}

/**
 * The kernel's seqno order (`__dma_fence_is_later`): with 64-bit seqnos a plain comparison;
 * otherwise only the low 32 bits count and `a` is later when `(a - b) mod 2^32`, read as a signed
 * 32-bit number, is positive (so equal is not later, and a gap of exactly 2^31 is neither).
 */
export function seqnoIsLater(a: bigint, b: bigint, seqno64: boolean): boolean {
  if (seqno64) return BigInt.asUintN(64, a) > BigInt.asUintN(64, b);
  return Number(BigInt.asIntN(32, a - b)) > 0;
}

// ---- the handle class -------------------------------------------------------------------------

const fenceKind = new HandleKind('dma-fence', RecordType.FENCE, putFence);

function wrapFence(slot: number, gen: number, owned: boolean): DmaFence {
  const d = domain();
  const kind = (Atomics.load(d.at32(slot), d.base(slot) + F.FLAGS) & KIND_MASK) >> KIND_SHIFT;
  const hooks = hooksOf(kind << KIND_SHIFT);
  if (hooks) return hooks.wrap(slot, gen, owned);
  return new DmaFence(ADOPT, slot, gen, owned);
}

/** @internal Token for the adopting constructor. */
export const ADOPT: unique symbol = Symbol('adopt');

/** How to build a fence. */
export interface DmaFenceInit {
  /** Use 64-bit seqno ordering (`dma_fence_init64`); default false (32-bit, wrapping). */
  seqno64?: boolean;
}

/**
 * A handle to a dma_fence. Creating one allocates the fence with a reference owned by the
 * handle; `dispose()` puts it.
 *
 * @example
 * ```ts
 * import { DmaFence } from 'dmabuf';
 * const ctx = DmaFence.contextAlloc(1);
 * using fence = new DmaFence(ctx, 1n, { driverName: 'demo', timelineName: 'cpu' });
 * fence.addCallback(() => console.log('done'));
 * fence.signal();
 * ```
 */
export class DmaFence extends SharedObject {
  /**
   * Allocates `num` consecutive fence contexts from the counter shared by all threads and
   * returns the first (`dma_fence_context_alloc`). Context 0 is reserved for stub fences.
   *
   * @throws {DmaBufError} EINVAL when `num` is not a positive integer.
   */
  static contextAlloc(num = 1): bigint {
    if (!Number.isInteger(num) || num < 1) {
      throw new DmaBufError('EINVAL', 'contextAlloc needs a positive integer count');
    }
    return domain().allocContexts(num);
  }

  /**
   * Creates an unsignalled fence on `context` with `seqno` (`dma_fence_init`). With `ops`, the
   * calling thread becomes the fence's owner and runs its ops.
   *
   * @throws {DmaBufError} EINVAL for a context or seqno outside [0, 2^64), or ops without the
   *   two mandatory names.
   */
  constructor(context: bigint, seqno: bigint, ops?: DmaFenceOps, init?: DmaFenceInit);
  /** @internal */
  constructor(adopt: typeof ADOPT, slot: number, gen: number, owned: boolean);
  constructor(
    a: bigint | typeof ADOPT,
    b: bigint | number,
    c?: DmaFenceOps | number,
    e?: DmaFenceInit | boolean,
  ) {
    if (a === ADOPT) {
      super(b as number, c as number, e as boolean);
      return;
    }
    const context = checkU64(a, 'context');
    const seqno = checkU64(b, 'seqno');
    const ops = c as DmaFenceOps | undefined;
    const init = e as DmaFenceInit | undefined;
    const d = domain();
    const names = ops ? opsNames(ops) : DEFAULT_NAMES;
    const slot = initFenceRecord(
      d,
      FenceKindId.PLAIN,
      context,
      seqno,
      names[0],
      names[1],
      !!init?.seqno64,
    );
    super(slot, d.peekGen(slot), true);
    if (ops) attachOps(d, slot, this._gen, ops);
  }

  /** @internal */
  override _kind(): HandleKind {
    return fenceKind;
  }

  /**
   * Adopts a fence handed over by another thread (see `share()`); the result is the same fence.
   *
   * @throws {DmaBufError} EINVAL for a message that is not a fence; EBADF when it was already
   *   imported; EXDEV for a fence of another domain.
   */
  static import(msg: SharedMessage): DmaFence {
    claim(msg, fenceKind);
    return wrapFence(msg.slot, msg.gen, true);
  }

  /**
   * Gives back the reference held by a message that will never be imported.
   *
   * @throws {DmaBufError} EBADF when it was already imported or released.
   */
  static override releaseShared(msg: SharedMessage): void {
    SharedObject.releaseShared(msg, fenceKind);
  }

  /** A new reference to the same fence, as a new handle (`dma_fence_get`). */
  get(): this {
    const d = this._check();
    d.get(this._slot);
    return wrapFence(this._slot, this._gen, true) as this;
  }

  /** Same as `dispose()` (`dma_fence_put`). */
  put(): void {
    this.dispose();
  }

  /** The fence's context. */
  get context(): bigint {
    const d = this._check();
    return BigInt.asUintN(64, Atomics.load(d.at64(this._slot), d.base64(this._slot) + F.CONTEXT64));
  }

  /** The fence's sequence number. */
  get seqno(): bigint {
    const d = this._check();
    return BigInt.asUintN(64, Atomics.load(d.at64(this._slot), d.base64(this._slot) + F.SEQNO64));
  }

  /** The raw flag word's kernel bits (SEQNO64, SIGNALED, TIMESTAMP, ENABLE_SIGNAL). */
  get flags(): number {
    const d = this._check();
    return Atomics.load(d.at32(this._slot), d.base(this._slot) + F.FLAGS) & 0xf;
  }

  /** True when the fence uses 64-bit seqno ordering. */
  get seqno64(): boolean {
    return (this.flags & SEQNO64) !== 0;
  }

  /**
   * The error set before signalling (0 if none). Never positive: a container's internal
   * "pending" marker is not an error.
   */
  get error(): number {
    const d = this._check();
    return Math.min(Atomics.load(d.at32(this._slot), d.base(this._slot) + F.ERROR), 0);
  }

  /** The signal time (monotonic ns), or undefined while unsignalled. */
  get timestamp(): bigint | undefined {
    const d = this._check();
    const b = d.base(this._slot);
    const flags = Atomics.load(d.i32, b + F.FLAGS);
    if ((flags & SIGNALED) === 0) return undefined;
    // The timestamp lands just after the signalled bit; wait for it (dma_fence_timestamp).
    while ((Atomics.load(d.i32, b + F.FLAGS) & TIMESTAMP) === 0) {
      /* spin: the signaller is between two stores */
    }
    return Atomics.load(d.at64(this._slot), d.base64(this._slot) + F.TIMESTAMP64);
  }

  /**
   * The driver's name; `'detached-driver'` once signalled (a driver may tear down its names
   * after its fences completed, so they are never read after that).
   */
  get driverName(): string {
    const d = this._check();
    const b = d.base(this._slot);
    if ((Atomics.load(d.i32, b + F.FLAGS) & SIGNALED) !== 0) return 'detached-driver';
    return d.name(Atomics.load(d.i32, b + F.NAMES) >>> 16);
  }

  /** The timeline's name; `'signaled-timeline'` once signalled. */
  get timelineName(): string {
    const d = this._check();
    const b = d.base(this._slot);
    if ((Atomics.load(d.i32, b + F.FLAGS) & SIGNALED) !== 0) return 'signaled-timeline';
    return d.name(Atomics.load(d.i32, b + F.NAMES) & 0xffff);
  }

  /** One line describing the fence (`dma_fence_describe`). */
  describe(): string {
    const sig = this.isSignaledFlag();
    return `${this.driverName} ${this.timelineName} seq ${this.seqno} ${sig ? '' : 'un'}signalled`;
  }

  /**
   * Signals the fence now (`dma_fence_signal`): records the timestamp, wakes every waiter and
   * runs callbacks (this thread's at once, other threads' from their event loops).
   *
   * @throws {DmaBufError} EINVAL when the fence was already signalled; nothing else happens then.
   */
  signal(): void {
    const d = this._check();
    if (!signalSlot(d, this._slot, undefined)) {
      throw new DmaBufError('EINVAL', 'fence already signalled');
    }
  }

  /**
   * Signals with a given timestamp (`dma_fence_signal_timestamp`).
   *
   * @throws {DmaBufError} EINVAL when already signalled or `ts` is not a non-negative bigint.
   */
  signalTimestamp(ts: bigint): void {
    const d = this._check();
    if (typeof ts !== 'bigint' || ts < 0n)
      throw new DmaBufError('EINVAL', 'timestamp must be a bigint >= 0');
    if (!signalSlot(d, this._slot, ts)) throw new DmaBufError('EINVAL', 'fence already signalled');
  }

  /**
   * Signals unless already signalled; returns true if it already was
   * (`dma_fence_check_and_signal`, the newer kernels' non-failing form).
   */
  checkAndSignal(): boolean {
    const d = this._check();
    return !signalSlot(d, this._slot, undefined);
  }

  /** Only the signalled bit, without polling anything (`dma_fence_test_signaled_flag`). */
  isSignaledFlag(): boolean {
    const d = this._check();
    return (Atomics.load(d.at32(this._slot), d.base(this._slot) + F.FLAGS) & SIGNALED) !== 0;
  }

  /**
   * True once signalled (`dma_fence_is_signaled`). Also polls: a container's members, and in
   * the owner thread the driver's `signaled` op, signalling the fence when they report done.
   * Does not enable signalling.
   */
  isSignaled(): boolean {
    const d = this._check();
    return isSignaledSlot(d, this._slot, this._gen);
  }

  /**
   * Records an error to report when the fence signals (`dma_fence_set_error`).
   *
   * @throws {DmaBufError} EINVAL when already signalled, or `err` is not an integer in
   *   [-4095, -1]. (The kernel only warns and stores it anyway; here bad input is an error.)
   */
  setError(err: number): void {
    const d = this._check();
    const b = d.base(this._slot);
    if ((Atomics.load(d.i32, b + F.FLAGS) & SIGNALED) !== 0) {
      throw new DmaBufError('EINVAL', 'setError after the fence signalled');
    }
    if (!Number.isInteger(err) || err >= 0 || err < -MAX_ERRNO) {
      throw new DmaBufError(
        'EINVAL',
        `setError needs a negative errno in [-${MAX_ERRNO}, -1], got ${err}`,
      );
    }
    Atomics.store(d.i32, b + F.ERROR, err);
  }

  /**
   * 0 while pending, 1 when signalled without error, the negative error otherwise
   * (`dma_fence_get_status`; polls like `isSignaled`).
   */
  getStatus(): number {
    const d = this._check();
    if (!isSignaledSlot(d, this._slot, this._gen)) return 0;
    const e = Atomics.load(d.at32(this._slot), d.base(this._slot) + F.ERROR);
    return e < 0 ? e : 1;
  }

  /**
   * Turns on signalling (`dma_fence_enable_sw_signaling`): the owner's `enableSignaling` op runs
   * once, containers arm their members. Idempotent.
   */
  enableSwSignaling(): void {
    const d = this._check();
    enableSlot(d, this._slot, this._gen);
  }

  /**
   * Adds a callback run once when the fence signals, in this thread, after earlier callbacks
   * of this thread (`dma_fence_add_callback`). Enables signalling first, which may signal the
   * fence at once. The callback gets a borrowed handle to the fence (take `get()` to keep it).
   *
   * @throws {DmaBufError} ENOENT when the fence has already signalled: the callback is not
   *   added and not called.
   */
  addCallback(func: (fence: DmaFence) => void): DmaFenceCb {
    if (typeof func !== 'function') throw new DmaBufError('EINVAL', 'callback must be a function');
    const d = this._check();
    const cb = addCallbackSlot(d, this, func);
    if (!cb) throw new DmaBufError('ENOENT', 'fence already signalled');
    return cb;
  }

  /**
   * Removes a callback (`dma_fence_remove_callback`): true if it was still pending and will now
   * never run; false if it already ran, is about to run (the fence signalled), or was removed.
   */
  removeCallback(cb: DmaFenceCb): boolean {
    if (
      !(cb instanceof Callback) ||
      cb.state !== QUEUED ||
      cb.slot !== this._slot ||
      cb.gen !== this._gen
    ) {
      return false;
    }
    const d = this._check();
    if ((Atomics.load(d.at32(this._slot), d.base(this._slot) + F.FLAGS) & SIGNALED) !== 0)
      return false;
    const lf = local[this._slot];
    if (!lf || lf.gen !== this._gen) return false;
    const i = lf.cbs.indexOf(cb);
    if (i < 0) return false;
    lf.cbs.splice(i, 1);
    cb.state = REMOVED;
    settlePending(-1);
    if (lf.cbs.length === 0) {
      // No callback of this thread is left: if no other thread has any either, the fence has
      // none pending, and dropping its last reference must free it silently (not -EDEADLK).
      const b = d.base(this._slot);
      const t = d.peekThreadIndex();
      Atomics.compareExchange(d.i32, b + F.CBTHREAD, t + 1, 0);
    }
    return true;
  }

  /**
   * Waits for the fence without blocking the event loop (`dma_fence_wait_timeout`). Resolves to
   * the remaining time in ms: positive when signalled (1 if `timeout` was 0 and it already
   * was), 0 on timeout. Enables signalling first.
   *
   * @throws {DmaBufError} EINVAL for a negative timeout; ERESTARTSYS when `signal` aborts.
   */
  async wait(opts: DmaFenceWaitOptions = {}): Promise<number> {
    const w = this.#beginWait(opts, false);
    if (typeof w === 'number') return w;
    const start = nowMs();
    const ok = await waitUntilAsync(w.target, w.done, w.timeout, opts.signal);
    return ok ? timeLeft(w.timeout, nowMs() - start) : 0;
  }

  /**
   * Blocks the calling thread until the fence signals, like {@linkcode DmaFence.wait}. Not for
   * code that must not block: the debug checker reports it inside callbacks.
   *
   * @throws {DmaBufError} EINVAL for a negative timeout; ERESTARTSYS when `signal` is already
   *   aborted (a blocked thread cannot observe a later abort).
   */
  waitSync(opts: DmaFenceWaitOptions = {}): number {
    const w = this.#beginWait(opts, true);
    if (typeof w === 'number') return w;
    return waitFor(w.target, w.done, w.timeout);
  }

  /**
   * The common start of both waits (`dma_fence_wait_timeout` up to the sleep): checks, the
   * annotations, enabling signalling, and the answers that need no sleep. Returns the result
   * when there is nothing to wait for, else what the waiter needs.
   */
  #beginWait(
    opts: DmaFenceWaitOptions,
    blocking: boolean,
  ): number | { target: WaitTarget; done: () => boolean; timeout: number } {
    const d = this._check();
    const timeout = checkTimeout(opts.timeout);
    if (blocking) mightSleep('dma_fence_wait');
    dmaFenceMightWait();
    enableSlot(d, this._slot, this._gen);
    const b = d.base(this._slot);
    const done = (): boolean => (Atomics.load(d.i32, b + F.FLAGS) & SIGNALED) !== 0;
    // As in dma_fence_default_wait: a signalled fence wins over a pending interruption.
    if (done()) return timeout === 0 ? 1 : timeout;
    throwIfAborted(opts.signal);
    if (timeout === 0) return 0;
    return { target: fenceWaitTarget(d, this._slot), done, timeout };
  }

  /**
   * Passes a deadline hint (monotonic ns) to the owner's `setDeadline` op unless the fence has
   * signalled (`dma_fence_set_deadline`); containers forward it to their members. The earliest
   * deadline is kept.
   *
   * @throws {DmaBufError} EINVAL when `deadlineNs` is not a non-negative bigint.
   */
  setDeadline(deadlineNs: bigint): void {
    const d = this._check();
    if (typeof deadlineNs !== 'bigint' || deadlineNs < 0n) {
      throw new DmaBufError('EINVAL', 'deadline must be a bigint >= 0 (monotonic ns)');
    }
    setDeadlineSlot(d, this._slot, this._gen, deadlineNs);
  }

  /** The earliest deadline hint so far, or undefined. */
  get deadline(): bigint | undefined {
    const d = this._check();
    if ((Atomics.load(d.at32(this._slot), d.base(this._slot) + F.FLAGS) & DEADLINE_SET) === 0)
      return undefined;
    return Atomics.load(d.at64(this._slot), d.base64(this._slot) + F.DEADLINE64);
  }

  /**
   * Whether `this` is later than `other` on their common context (`dma_fence_is_later`).
   *
   * @throws {DmaBufError} EINVAL when the contexts differ (the kernel warns and says false).
   */
  isLater(other: DmaFence): boolean {
    sameContext(this, other);
    return seqnoIsLater(this.seqno, other.seqno, this.seqno64);
  }

  /** `this` is `other` or later (`dma_fence_is_later_or_same`). */
  isLaterOrSame(other: DmaFence): boolean {
    if (this._slot === other._slot && this._gen === other._gen) return true;
    return this.isLater(other);
  }

  /**
   * The later of two fences of one context, or undefined when that one has already signalled
   * (`dma_fence_later`). Returns one of the given handles; no reference is taken.
   *
   * @throws {DmaBufError} EINVAL when the contexts differ.
   */
  static later(f1: DmaFence, f2: DmaFence): DmaFence | undefined {
    const l = f1.isLater(f2) ? f1 : f2;
    return l.isSignaled() ? undefined : l;
  }

  /**
   * Waits until any fence signals (`dma_fence_wait_any_timeout`). Resolves `{ remaining, index }`:
   * `remaining` as for `wait` (the whole timeout if one had already signalled), `index` the
   * lowest signalled index; `remaining` 0 and `index` -1 on timeout.
   *
   * @throws {DmaBufError} EINVAL for an empty list or negative timeout; ERESTARTSYS on abort.
   */
  static async waitAny(
    fences: readonly DmaFence[],
    opts: DmaFenceWaitOptions = {},
  ): Promise<WaitAnyResult> {
    const timeout = checkAnyArgs(fences, opts);
    dmaFenceMightWait();
    // As in dma_fence_wait_any_timeout: a fence found signalled wins over a pending
    // interruption (waitUntilAsync tests the condition before the abort signal).
    if (timeout === 0) return pollAny(fences);
    const armed = armAny(fences);
    if ('index' in armed) return { remaining: timeout, index: armed.index };
    const start = nowMs();
    try {
      const d = domain();
      const target: WaitTarget = { region: d.region, index: d.doorbellWord(), sleepers: -1 };
      const ok = await waitUntilAsync(
        target,
        () => firstSignaled(fences) >= 0,
        timeout,
        opts.signal,
      );
      return ok
        ? { remaining: timeLeft(timeout, nowMs() - start), index: firstSignaled(fences) }
        : { remaining: 0, index: -1 };
    } finally {
      disarmAny(fences, armed.cbs);
    }
  }

  /** The blocking form of {@linkcode DmaFence.waitAny}. */
  static waitAnySync(fences: readonly DmaFence[], opts: DmaFenceWaitOptions = {}): WaitAnyResult {
    const timeout = checkAnyArgs(fences, opts);
    mightSleep('dma_fence_wait_any');
    dmaFenceMightWait();
    if (timeout === 0) return pollAny(fences);
    const armed = armAny(fences);
    if ('index' in armed) return { remaining: timeout, index: armed.index };
    try {
      if (firstSignaled(fences) < 0) throwIfAborted(opts.signal);
      const d = domain();
      const target: WaitTarget = { region: d.region, index: d.doorbellWord(), sleepers: -1 };
      const left = waitFor(target, () => firstSignaled(fences) >= 0, timeout);
      return left > 0
        ? { remaining: left, index: firstSignaled(fences) }
        : { remaining: 0, index: -1 };
    } finally {
      disarmAny(fences, armed.cbs);
    }
  }

  /**
   * A new reference to the one shared stub fence: signalled, context 0, seqno 0, named "stub";
   * its timestamp is the time of the first call in any thread (`dma_fence_get_stub`).
   */
  static getStub(): DmaFence {
    const d = domain();
    const slot = stubSlot(d);
    d.get(slot);
    return wrapFence(slot, d.gen(slot), true);
  }

  /**
   * A new signalled fence on context 0 with seqno 0 and the given timestamp (default now)
   * (`dma_fence_allocate_private_stub`).
   */
  static allocatePrivateStub(timestampNs?: bigint): DmaFence {
    const d = domain();
    const slot = initFenceRecord(d, FenceKindId.STUB, 0n, 0n, 'stub', 'stub', false);
    Atomics.or(d.at32(slot), d.base(slot) + F.FLAGS, ENABLE);
    signalSlot(d, slot, timestampNs ?? ktimeGetNs());
    return wrapFence(slot, d.gen(slot), true);
  }
}

/** Result of `waitAny`. */
export interface WaitAnyResult {
  remaining: number;
  index: number;
}

const DEFAULT_NAMES: readonly [string, string] = ['dma_fence', 'unbound'];

function opsNames(ops: DmaFenceOps): [string, string] {
  if (typeof ops !== 'object' || ops === null)
    throw new DmaBufError('EINVAL', 'ops must be an object');
  if (typeof ops.driverName !== 'string' || typeof ops.timelineName !== 'string') {
    throw new DmaBufError('EINVAL', 'ops need driverName and timelineName (both mandatory)');
  }
  return [ops.driverName, ops.timelineName];
}

function checkTimeout(t: number | undefined): number {
  const timeout = t ?? Number.POSITIVE_INFINITY;
  if (typeof timeout !== 'number' || Number.isNaN(timeout) || timeout < 0) {
    throw new DmaBufError('EINVAL', 'timeout must be a number >= 0 (ms) or Infinity');
  }
  return timeout;
}

function sameContext(a: DmaFence, b: DmaFence): void {
  if (a.context !== b.context) {
    throw new DmaBufError(
      'EINVAL',
      `fences of different contexts (${a.context}, ${b.context}) are not ordered`,
    );
  }
}

function checkAnyArgs(fences: readonly DmaFence[], opts: DmaFenceWaitOptions): number {
  if (!Array.isArray(fences) || fences.length === 0) {
    throw new DmaBufError('EINVAL', 'waitAny needs at least one fence');
  }
  for (const f of fences) {
    if (!(f instanceof DmaFence)) throw new DmaBufError('EINVAL', 'waitAny takes DmaFence handles');
    f._check();
  }
  return checkTimeout(opts.timeout);
}

function pollAny(fences: readonly DmaFence[]): WaitAnyResult {
  for (let i = 0; i < fences.length; i++) {
    if (fences[i]!.isSignaled()) return { remaining: 1, index: i };
  }
  return { remaining: 0, index: -1 };
}

function firstSignaled(fences: readonly DmaFence[]): number {
  const d = domain();
  for (let i = 0; i < fences.length; i++) {
    if (
      (Atomics.load(d.at32(fences[i]!._slot), d.base(fences[i]!._slot) + F.FLAGS) & SIGNALED) !==
      0
    )
      return i;
  }
  return -1;
}

function armAny(fences: readonly DmaFence[]): { index: number } | { cbs: DmaFenceCb[] } {
  const d = domain();
  const cbs: DmaFenceCb[] = [];
  // The waiter sleeps on this thread's doorbell. A signaller in another thread rings it when it
  // posts the callback; a signaller in this thread runs the callback directly, so the callback
  // must ring it itself or the waiter only notices at its next periodic re-check.
  const bell = d.doorbellWord();
  const ring = (): void => {
    Atomics.add(d.i32, bell, 1);
    d.region.notify(bell);
  };
  for (let i = 0; i < fences.length; i++) {
    const cb = addCallbackSlot(d, fences[i]!, ring);
    if (!cb) {
      disarmAny(fences, cbs);
      return { index: i };
    }
    cbs.push(cb);
  }
  return { cbs };
}

function disarmAny(fences: readonly DmaFence[], cbs: DmaFenceCb[]): void {
  for (let i = 0; i < cbs.length; i++) fences[i]!.removeCallback(cbs[i]!);
}

function addCallbackSlot(
  d: Domain,
  fence: DmaFence,
  func: (f: DmaFence) => void,
): DmaFenceCb | null {
  const slot = fence._slot;
  const b = d.base(slot);
  const i32 = d.i32;
  // A plain peek: the atomic read after registering below is what decides.
  if ((i32[b + F.FLAGS]! & SIGNALED) !== 0) return null;
  enableSlot(d, slot, fence._gen);
  const t = ensureMailbox(d);
  // Counted before the fence can see us: a broadcasting signaller must find this thread marked.
  settlePending(1);
  // Register without the fence lock, Dekker style with the signaller (which sets SIGNALED,
  // then reads this word): we write this word, then read SIGNALED. With sequentially
  // consistent atomics at least one side sees the other, so either the signaller delivers to
  // us or we see the fence signalled and report ENOENT; a delivery that finds no callback
  // here is harmless.
  for (;;) {
    // A plain read: a stale value fails the compare-exchange, or (when it already names this
    // thread or MULTI) is caught by the atomic SIGNALED check below, since the signaller sets
    // SIGNALED before it clears this word.
    const cur = i32[b + F.CBTHREAD]!;
    const want = cur === 0 ? t + 1 : cur === t + 1 ? cur : MULTI;
    if (want === cur || Atomics.compareExchange(i32, b + F.CBTHREAD, cur, want) === cur) break;
  }
  if ((Atomics.load(i32, b + F.FLAGS) & SIGNALED) !== 0) {
    settlePending(-1);
    return null;
  }
  // The registration holds a borrowed handle, not the caller's: a pending callback must not
  // keep the caller's handle reachable, or a fence whose handles were all lost could never be
  // reclaimed by the safety net (and its callbacks never see -EDEADLK).
  const lf = getLocal(slot, fence._gen);
  const cb = new Callback(func, lf, slot, fence._gen);
  // A fence usually has one callback per thread: an exact one-element array, no growth.
  if (lf.cbs.length === 0) lf.cbs = [cb];
  else lf.cbs.push(cb);
  return cb;
}

function setDeadlineSlot(d: Domain, slot: number, gen: number, ns: bigint): void {
  const b = d.base(slot);
  const i64 = d.i64;
  const at = d.base64(slot) + F.DEADLINE64;
  const flags = Atomics.load(d.i32, b + F.FLAGS);
  if ((flags & SIGNALED) !== 0) return;
  lockWord(d.region, b + F.LOCK);
  const set = (Atomics.load(d.i32, b + F.FLAGS) & DEADLINE_SET) !== 0;
  if (!set || ns < Atomics.load(i64, at)) Atomics.store(i64, at, ns);
  Atomics.or(d.i32, b + F.FLAGS, DEADLINE_SET);
  unlockWord(d.region, b + F.LOCK);
  hooksOf(flags)?.setDeadline?.(d, slot, ns);
  if ((flags & OP_DEADLINE) !== 0) {
    const owner = Atomics.load(d.i32, b + F.OWNER) - 1;
    if (owner === d.peekThreadIndex()) runDeadlineOp(slot, gen);
    else d.post(owner, Mail.DEADLINE, slot, gen);
  }
}

/** @internal Deadline forwarding for containers. */
export { setDeadlineSlot };

const STUB_SLOT = 0;
const STUB_LOCK = 1;

function stubSlot(d: Domain): number {
  const w = d.globalWord(STUB_SLOT);
  const s = Atomics.load(d.i32, w);
  if (s !== 0) return s - 1;
  const lock = d.globalWord(STUB_LOCK);
  lockWord(d.region, lock);
  try {
    const again = Atomics.load(d.i32, w);
    if (again !== 0) return again - 1;
    const slot = initFenceRecord(d, FenceKindId.STUB, 0n, 0n, 'stub', 'stub', false);
    // The stub lives as long as the domain: a bias keeps its count from ever reaching zero.
    Atomics.add(d.at32(slot), d.base(slot) + R_REF, 1 << 20);
    Atomics.or(d.at32(slot), d.base(slot) + F.FLAGS, ENABLE);
    signalSlot(d, slot, ktimeGetNs());
    Atomics.store(d.i32, w, slot + 1);
    return slot;
  } finally {
    unlockWord(d.region, lock);
  }
}

/** @internal For containers: wraps a record as the right handle class. */
export { wrapFence };

/** @internal Bits a container module needs. */
export const FENCE_BITS = { SIGNALED, ENABLE, KIND_SHIFT, KIND_MASK } as const;
