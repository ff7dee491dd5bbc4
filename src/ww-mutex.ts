/**
 * ww_mutex: wound/wait mutexes with acquire contexts (include/linux/ww_mutex.h,
 * kernel/locking/ww_mutex.h, Documentation/locking/ww-mutex-design.rst).
 *
 * A ww_mutex is a sleeping mutex that can be taken in any order by transactions (acquire
 * contexts) without deadlocking: every context gets a stamp from one shared counter when it is
 * created, lower = older, and when two contexts meet on a lock the younger one backs off with
 * `EDEADLK`, releases everything it holds and retries through the slow path (`lockSlow` on the
 * lock it hit), keeping its stamp so that it eventually becomes the oldest and wins.
 *
 * - Wait-Die (the default, and the algorithm of `reservation_ww_class`): a younger requester that
 *   already holds locks dies when it meets an older holder, or an older context already queued
 *   on the lock.
 * - Wound-Wait: an older requester that holds locks *wounds* a younger holder and waits; the
 *   wounded context notices when it next has to wait on a contended lock while holding locks (it
 *   is woken if it is already waiting) and gets `EDEADLK` there.
 * - `EALREADY`: the context already holds this lock. A context holding nothing never gets
 *   `EDEADLK`; `EINTR` (an aborted `AbortSignal`) is checked before the kill check.
 * - Without a context a ww_mutex is a plain mutex: no `EDEADLK`, no `EALREADY`.
 *
 * How the kernel's model maps onto threads:
 * - The mutex is eight words in a shared record (a `WwMutex` record, or embedded in a
 *   `DmaResv` record). The owner word holds the holder's identity: the context's stamp (a
 *   positive 31-bit number) or, for a lock taken without a context, the negated thread id + 1.
 *   The fast path is one compare-exchange on it.
 * - A context is a shared record too (stamp, acquired count, wounded flag, owner thread), so a
 *   waiter in another thread can compare stamps and wound it. It is used by the thread that
 *   created it (locking with it elsewhere is `EPERM`); other threads may hold handles to inspect
 *   it (`lockingCtx()`).
 * - Waiters queue in stamp order (the kernel's sorted wait list: contexts by stamp, context-less
 *   waiters FIFO and never skipped) in small shared nodes, under an internal lock word, and sleep
 *   through the one waiter (`waitUntil` / `waitUntilAsync`) on a per-mutex wake counter. Every
 *   event that can change a waiter's verdict bumps it: an unlock, an acquisition by a context
 *   while others wait (the kernel's "check waiters" after a fast-path acquisition), an older
 *   waiter queueing ahead of younger ones, a wound.
 * - A held lock keeps a reference on its record, so an object cannot disappear while locked.
 *
 * Debug behaviour modelled always (the kernel's CONFIG_DEBUG_MUTEXES warnings become `EINVAL`,
 * never silent): locking with a context after `done()` or `fini()`, a context and a mutex of
 * different classes, `lockSlow` while still holding locks or on another lock than the contended
 * one, locking another lock after `EDEADLK` before the slow path. `EPERM`: unlock by a thread or
 * context that does not hold the lock. `CONFIG_DEBUG_WW_MUTEX_SLOWPATH` (injected `EDEADLK`s to
 * exercise back-off paths) is available per context or per thread, see
 * {@linkcode wwMutexDebugSlowpath}.
 *
 * Deviations, chosen on purpose:
 * - No lock hand-off: a woken waiter competes with newcomers for a released lock (the kernel
 *   hands off to the first waiter only after it has been starved for a while). Wait-Die and
 *   Wound-Wait still guarantee progress: the oldest context is never killed.
 * - A blocking (synchronous) lock of a lock this thread already holds (without a context, or
 *   with another of its contexts) throws `EDEADLK` instead of hanging forever (the kernel
 *   deadlocks, lockdep reports it). Asynchronous locks wait: another task may release it.
 * - `trylock(ctx)` of a lock the context holds returns false, as the kernel does.
 * - Lock debugging (lockdep): the mutex class is the class name (`reservation_ww_class` for
 *   reservation objects), the context class `<name>_acquire`. Locks taken within one context are
 *   one nested hold (the kernel's `nest_lock`): the class is acquired with the first lock of the
 *   context and released with its last.
 *
 * @module
 */
import { threadId } from 'node:worker_threads';
import { LockClass, lockAcquire, lockdepEnabled, lockRelease, mightSleep } from './lockdep.js';
import {
  type Domain,
  domain,
  R_FLAGS,
  RecordType,
  TYPE_MASK,
  TYPE_SHIFT,
} from './substrate/domain.js';
import { DmaBufError } from './substrate/errno.js';
import { claim, HandleKind, type SharedMessage, SharedObject } from './substrate/handle.js';
import { lockWord, unlockWord } from './substrate/lock.js';
import { type WaitTarget, waitUntil, waitUntilAsync } from './substrate/waiter.js';

// ---- record layout ----------------------------------------------------------------------------

/** @internal First word of the mutex in a record that holds one (WW_MUTEX and DMA_RESV). */
export const MUTEX_OFF = 3;
/** @internal Number of words the mutex takes. */
export const MUTEX_WORDS = 8;
/** Holder: 0 free, > 0 the holding context's stamp, < 0 -(threadId + 1) of a context-less holder. */
const MX_OWNER = 0;
/** Holder context as slot + 1 (0 when free or held without a context), and its generation. */
const MX_CTX = 1;
const MX_CTXGEN = 2;
/** Internal lock word (the kernel's wait_lock) protecting the waiter list. */
const MX_WLOCK = 3;
/** Wake counter waiters sleep on. */
const MX_SEQ = 4;
/** Number of queued waiters. */
const MX_NWAIT = 5;
/** First waiter node, as slot + 1. */
const MX_HEAD = 6;
/** The class word (see WwClass). */
const MX_CLASS = 7;

/** Waiter node (an EXT record): next node (slot + 1), stamp, 1 when it waits with a context. */
const N_NEXT = 3;
const N_STAMP = 4;
const N_CTX = 5;

/** Context record words. */
const C_STAMP = 3;
const C_ACQUIRED = 4;
const C_WOUNDED = 5;
const C_THREAD = 6;
const C_CLASS = 7;
const C_STATE = 8;
/** Record (slot + 1, generation) of the mutex this context is waiting on, for wound wake-ups. */
const C_WAITSLOT = 9;
const C_WAITGEN = 10;
/** The lock this context got EDEADLK on (slot + 1, generation): the kernel's contending_lock. */
const C_CONTEND = 11;
const C_CONTENDGEN = 12;
/** Deadlock injection (CONFIG_DEBUG_WW_MUTEX_SLOWPATH): on flag, countdown, interval. */
const C_INJ_ON = 13;
const C_INJ_COUNT = 14;
const C_INJ_INTERVAL = 15;

const ST_DONE = 1;
const ST_FINI = 2;

/** Global word (see Domain.globalWord) holding the shared stamp counter. */
const STAMP_GLOBAL = 2;

/** @internal Kernel-style results of the internal lock functions. */
export const WW_OK = 0;
/** @internal */
export const WW_EDEADLK = -35;
/** @internal */
export const WW_EALREADY = -114;
/** @internal */
export const WW_EINTR = -4;
const PENDING = 1;

const SELF = threadId + 1;
const THREAD_TOKEN = -SELF;
const STAMP_MASK = 0x7fffffff;

/**
 * True when stamp `a` belongs to a younger context than stamp `b` (the kernel's
 * `(signed long)(a - b) > 0`, on the 31 bits stamps have here: wrap-safe).
 */
export function wwStampAfter(a: number, b: number): boolean {
  const diff = (a - b) & STAMP_MASK;
  return diff !== 0 && diff < 0x40000000;
}

function nextStamp(d: Domain): number {
  const w = d.globalWord(STAMP_GLOBAL);
  for (;;) {
    const s = (Atomics.add(d.i32, w, 1) + 1) & STAMP_MASK;
    if (s !== 0) return s;
  }
}

/** @internal The error thrown for an internal result code (EDEADLK, EALREADY, EINTR). */
export function wwError(code: number, what: string): DmaBufError {
  if (code === WW_EDEADLK) {
    return new DmaBufError(
      'EDEADLK',
      `${what}: an older context holds or waits for the lock; back off`,
    );
  }
  if (code === WW_EALREADY)
    return new DmaBufError('EALREADY', `${what}: the context already holds this lock`);
  return new DmaBufError('EINTR', `${what}: interrupted by AbortSignal`);
}

// ---- classes ----------------------------------------------------------------------------------

const classesByName = new Map<string, WwClass>();
const classesByWord = new Map<number, WwClass>();

/**
 * A ww_mutex class (`DEFINE_WD_CLASS` / `DEFINE_WW_CLASS`): every mutex and context belongs to
 * one, and only mutexes and contexts of the same class may be used together. Classes are
 * identified by name across threads; the algorithm is part of the identity.
 *
 * @example
 * ```ts
 * const cls = new WwClass('my_class'); // Wait-Die
 * const ww = new WwClass('my_ww_class', { waitDie: false }); // Wound-Wait
 * ```
 */
export class WwClass {
  /** The class of reservation objects: `reservation_ww_class`, Wait-Die. */
  static readonly reservation: WwClass = new WwClass('reservation_ww_class');

  /** The class name (also its lock-debugging name). */
  readonly name: string;
  /** True for Wait-Die (the default), false for Wound-Wait. */
  readonly isWaitDie: boolean;
  /** @internal Lock-debugging class of the mutexes. */
  readonly _mutexClass: LockClass;
  /** @internal Lock-debugging class of the acquire contexts. */
  readonly _acquireClass: LockClass;
  #word = 0;

  /**
   * @throws {DmaBufError} EINVAL for an empty name, a name longer than 64 bytes, or a name already
   *   used in this thread by a class of the other algorithm.
   */
  constructor(name: string, opts?: { waitDie?: boolean }) {
    if (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name) > 64) {
      throw new DmaBufError('EINVAL', 'a ww class needs a name of 1..64 bytes');
    }
    const waitDie = opts?.waitDie ?? true;
    const known = classesByName.get(name);
    if (known && known.isWaitDie !== waitDie) {
      throw new DmaBufError('EINVAL', `ww class ${name} already exists with the other algorithm`);
    }
    this.name = name;
    this.isWaitDie = waitDie;
    this._mutexClass = known?._mutexClass ?? new LockClass(name);
    this._acquireClass = known?._acquireClass ?? new LockClass(`${name}_acquire`);
    if (!known) classesByName.set(name, this);
  }

  /** @internal The class word stored in records: (name id + 1) << 1 | waitDie. */
  _word(d: Domain): number {
    if (this.#word === 0) {
      this.#word = ((d.intern(this.name) + 1) << 1) | (this.isWaitDie ? 1 : 0);
      if (!classesByWord.has(this.#word)) classesByWord.set(this.#word, this);
    }
    return this.#word;
  }

  /** @internal The class of a stored class word (created on first sight in this thread). */
  static _fromWord(d: Domain, word: number): WwClass {
    let c = classesByWord.get(word);
    if (!c) {
      const name = d.name((word >>> 1) - 1);
      c = classesByName.get(name);
      if (!c || c.isWaitDie !== ((word & 1) === 1))
        c = new WwClass(name, { waitDie: (word & 1) === 1 });
      classesByWord.set(word, c);
      c.#word = word;
    }
    return c;
  }
}

// ---- deadlock injection -------------------------------------------------------------------------

let injectDefault = false;

/**
 * Turns the kernel's `CONFIG_DEBUG_WW_MUTEX_SLOWPATH` on or off for contexts created later in
 * this thread (a context can also choose with its `debugSlowpath` option): after a successful
 * lock with more than one lock held, the lock is dropped again and `EDEADLK` returned, first
 * after `stamp & 0xf` such locks, then at intervals growing about 3.5 times each time. Meant
 * for tests of back-off paths.
 */
export function wwMutexDebugSlowpath(on: boolean): void {
  injectDefault = on;
}

// ---- contexts -------------------------------------------------------------------------------

const ctxKind = new HandleKind('ww-acquire-ctx', RecordType.WW_ACQUIRE_CTX, (slot) => {
  const d = domain();
  if (d.put(slot)) d.free(slot);
});

/** Contexts created in this thread, so that `lockingCtx()` can return the same handle. */
const localCtx = new Map<number, WeakRef<WwAcquireCtx>>();

/** @internal Adoption token. */
const ADOPT_CTX: unique symbol = Symbol('adopt-ctx');

/**
 * An acquire context (`struct ww_acquire_ctx`): one transaction that takes several ww_mutexes
 * of one class. Its stamp comes from the counter shared by every thread. Keep the same context
 * across back-off retries (a new one would be younger and could starve). Only the thread that
 * created it may lock with it.
 *
 * @example
 * ```ts
 * using ctx = new WwAcquireCtx();
 * a.lock(ctx);
 * try { b.lock(ctx); } catch (e) { ... back off: unlock a, b.lockSlow(ctx), retry a ... }
 * ctx.done();
 * // ... use the objects, unlock them ...
 * ctx.fini();
 * ```
 */
export class WwAcquireCtx extends SharedObject {
  /** @internal The stamp (immutable). */
  readonly _stamp: number;
  /** @internal The class. */
  readonly _class: WwClass;
  #lockdep = false;

  /**
   * Starts a transaction (`ww_acquire_init`).
   *
   * @param cls the class of the mutexes to be taken (default: `reservation_ww_class`).
   * @param opts.debugSlowpath inject `EDEADLK`s (see {@linkcode wwMutexDebugSlowpath}); default
   *   the thread's setting.
   * @throws {DmaBufError} EINVAL when `cls` is not a WwClass.
   */
  constructor(cls?: WwClass, opts?: { debugSlowpath?: boolean });
  /** @internal */
  constructor(adopt: typeof ADOPT_CTX, slot: number, gen: number, owned: boolean);
  constructor(
    a: WwClass | typeof ADOPT_CTX = WwClass.reservation,
    b?: { debugSlowpath?: boolean } | number,
    c?: number,
    e?: boolean,
  ) {
    const d = domain();
    if (a === ADOPT_CTX) {
      super(b as number, c as number, e as boolean);
      const base = d.base(this._slot);
      this._stamp = Atomics.load(d.i32, base + C_STAMP);
      this._class = WwClass._fromWord(d, Atomics.load(d.i32, base + C_CLASS));
      return;
    }
    if (!(a instanceof WwClass)) throw new DmaBufError('EINVAL', 'cls must be a WwClass');
    const opts = b as { debugSlowpath?: boolean } | undefined;
    // The acquire class is held for the transaction's lifetime (ww_acquire_init's lockdep hold).
    lockAcquire(a._acquireClass);
    let slot: number;
    try {
      slot = d.alloc(RecordType.WW_ACQUIRE_CTX);
    } catch (x) {
      lockRelease(a._acquireClass);
      throw x;
    }
    const stamp = nextStamp(d);
    const base = d.base(slot);
    const i32 = d.i32;
    i32[base + C_STAMP] = stamp;
    i32[base + C_THREAD] = SELF;
    i32[base + C_CLASS] = a._word(d);
    if (opts?.debugSlowpath ?? injectDefault) {
      i32[base + C_INJ_ON] = 1;
      i32[base + C_INJ_COUNT] = stamp & 0xf;
      i32[base + C_INJ_INTERVAL] = 1;
    }
    super(slot, d.gen(slot), true);
    this._stamp = stamp;
    this._class = a;
    this.#lockdep = lockdepEnabled();
    localCtx.set(slot, new WeakRef(this));
  }

  /** @internal */
  override _kind(): HandleKind {
    return ctxKind;
  }

  /**
   * Adopts a context handed over by another thread (to inspect it; only its own thread locks
   * with it).
   *
   * @throws {DmaBufError} EINVAL for a message that is not a context; EBADF when it was already
   *   imported or the context is gone; EXDEV for another domain's context.
   */
  static import(msg: SharedMessage): WwAcquireCtx {
    claim(msg, ctxKind);
    return new WwAcquireCtx(ADOPT_CTX, msg.slot, msg.gen, true);
  }

  /** Gives back the reference of a message that will never be imported. */
  static override releaseShared(msg: SharedMessage): void {
    SharedObject.releaseShared(msg, ctxKind);
  }

  /** @internal A borrowed handle (no reference) on a context record. */
  static _borrow(slot: number, gen: number): WwAcquireCtx {
    return new WwAcquireCtx(ADOPT_CTX, slot, gen, false);
  }

  /** The stamp: lower is older; compare with {@linkcode wwStampAfter}. */
  get stamp(): number {
    this._check();
    return this._stamp;
  }

  /** The class. */
  get class(): WwClass {
    return this._class;
  }

  /** Number of locks the context holds. */
  get acquired(): number {
    const d = this._check();
    return d.ld(this._slot, C_ACQUIRED);
  }

  /** True once an older context wounded this one (Wound-Wait; cleared when it holds nothing). */
  get wounded(): boolean {
    const d = this._check();
    return d.ld(this._slot, C_WOUNDED) !== 0;
  }

  /** True after `done()`. */
  get isDone(): boolean {
    const d = this._check();
    return (d.ld(this._slot, C_STATE) & ST_DONE) !== 0;
  }

  /**
   * Marks the end of the acquire phase (`ww_acquire_done`): locking with this context afterwards
   * is `EINVAL`. Optional.
   */
  done(): void {
    const d = this._check();
    const b = d.base(this._slot);
    Atomics.or(d.i32, b + C_STATE, ST_DONE);
  }

  /**
   * Ends the transaction (`ww_acquire_fini`), after every lock was released. `dispose()` calls it
   * when it was not called.
   *
   * @throws {DmaBufError} EBUSY while the context still holds locks; EINVAL when already
   *   finished (the kernel warns in both cases).
   */
  fini(): void {
    const d = this._check();
    const base = d.base(this._slot);
    const n = Atomics.load(d.i32, base + C_ACQUIRED);
    if (n !== 0) throw new DmaBufError('EBUSY', `ww_acquire_fini with ${n} lock(s) still held`);
    if ((Atomics.or(d.i32, base + C_STATE, ST_FINI | ST_DONE) & ST_FINI) !== 0) {
      throw new DmaBufError('EINVAL', 'ww_acquire_fini called twice');
    }
    this.#endLockdep();
  }

  #endLockdep(): void {
    if (this.#lockdep) {
      this.#lockdep = false;
      lockRelease(this._class._acquireClass);
    }
  }

  /**
   * Finishes the transaction if needed and puts this handle's reference. Locks still held keep
   * the context's record alive until they are unlocked.
   */
  override dispose(): void {
    if (this._state === 0 && domain().gen(this._slot) === this._gen) {
      const d = domain();
      const base = d.base(this._slot);
      if (Atomics.load(d.i32, base + C_THREAD) === SELF) {
        Atomics.or(d.i32, base + C_STATE, ST_FINI | ST_DONE);
      }
      this.#endLockdep();
      if (localCtx.get(this._slot)?.deref() === this) localCtx.delete(this._slot);
    }
    super.dispose();
  }
}

// ---- the mutex core (shared by WwMutex and DmaResv) ------------------------------------------------

/** @internal Drops the object's reference taken by a lock; releases the object if it was the last. */
export type ReleaseFn = (d: Domain, slot: number) => void;

/** @internal Initialises the mutex words of record `slot`. */
export function wwInit(d: Domain, slot: number, cls: WwClass): void {
  const w = cls._word(d);
  d.st(slot, MUTEX_OFF + MX_CLASS, w);
}

function classOf(d: Domain, slot: number): WwClass {
  return WwClass._fromWord(d, d.ld(slot, MUTEX_OFF + MX_CLASS));
}

function ctxPut(d: Domain, slot: number): void {
  if (d.put(slot)) d.free(slot);
}

/**
 * Validates a context for locking mutex `slot` and applies the kernel's entry rules. Returns
 * WW_EALREADY when the context already holds the lock, else WW_OK (and clears `wounded` when the
 * context holds nothing).
 */
function ctxEnter(d: Domain, slot: number, ctx: WwAcquireCtx, slow: boolean): number {
  ctx._check();
  const mb = d.base(slot) + MUTEX_OFF;
  const cb = d.base(ctx._slot);
  const i32 = d.i32;
  if (i32[cb + C_THREAD] !== SELF) {
    throw new DmaBufError(
      'EPERM',
      'an acquire context can only lock in the thread that created it',
    );
  }
  const state = i32[cb + C_STATE]!;
  if (state !== 0) {
    throw new DmaBufError(
      'EINVAL',
      (state & ST_FINI) !== 0 ? 'context already finished (fini)' : 'locking after ww_acquire_done',
    );
  }
  if (i32[cb + C_CLASS] !== Atomics.load(i32, mb + MX_CLASS)) {
    throw new DmaBufError('EINVAL', 'context and mutex belong to different ww classes');
  }
  if (
    Atomics.load(i32, mb + MX_OWNER) === ctx._stamp &&
    Atomics.load(i32, mb + MX_CTX) === ctx._slot + 1
  ) {
    return WW_EALREADY;
  }
  const acquired = i32[cb + C_ACQUIRED]!;
  const contend = i32[cb + C_CONTEND]!;
  if (slow && acquired !== 0) {
    throw new DmaBufError('EINVAL', 'lockSlow with locks still held: release everything first');
  }
  if (contend !== 0) {
    const same = contend === slot + 1 && i32[cb + C_CONTENDGEN] === d.gen(slot);
    if (!same) {
      throw new DmaBufError(
        'EINVAL',
        'after EDEADLK the contended lock must be taken first (lockSlow) before any other',
      );
    }
    if (acquired !== 0) {
      throw new DmaBufError('EINVAL', 'after EDEADLK release every lock before retrying');
    }
  }
  if (acquired === 0) Atomics.store(i32, cb + C_WOUNDED, 0);
  return WW_OK;
}

function annotateAcquire(
  d: Domain,
  slot: number,
  ctx: WwAcquireCtx | null,
  trylock: boolean,
): boolean {
  if (!lockdepEnabled()) return false;
  if (ctx && d.ld(ctx._slot, C_ACQUIRED) !== 0) return false;
  lockAcquire(classOf(d, slot)._mutexClass, trylock ? { trylock: true } : undefined);
  return true;
}

function annotateUndo(d: Domain, slot: number, annotated: boolean): void {
  if (annotated) lockRelease(classOf(d, slot)._mutexClass);
}

/** Bumps the wake counter of mutex `mb` (an absolute word index) and wakes its sleepers. */
function wakeWaiters(d: Domain, mb: number): void {
  Atomics.add(d.i32, mb + MX_SEQ, 1);
  d.region.notify(mb + MX_SEQ);
}

/**
 * Bookkeeping after the owner word was taken: holder context, acquired count, object reference,
 * wake-ups for waiters whose verdict may change, deadlock injection. Returns WW_OK or the
 * injected WW_EDEADLK (the lock is released again then).
 */
function acquiredLock(
  d: Domain,
  slot: number,
  ctx: WwAcquireCtx | null,
  inject: boolean,
  release: ReleaseFn,
): number {
  d.get(slot);
  if (!ctx) return WW_OK;
  const mb = d.base(slot) + MUTEX_OFF;
  const cb = d.base(ctx._slot);
  const i32 = d.i32;
  Atomics.store(i32, mb + MX_CTXGEN, ctx._gen);
  Atomics.store(i32, mb + MX_CTX, ctx._slot + 1);
  const n = i32[cb + C_ACQUIRED]! + 1;
  Atomics.store(i32, cb + C_ACQUIRED, n);
  // While it holds locks the context's record must outlive its handles: the locks point at it.
  if (n === 1) d.get(ctx._slot);
  if (i32[cb + C_CONTEND] !== 0) {
    i32[cb + C_CONTEND] = 0;
    i32[cb + C_CONTENDGEN] = 0;
  }
  // A new context holder can change a waiter's verdict (die, wound): let them look again.
  if (Atomics.load(i32, mb + MX_NWAIT) > 0) wakeWaiters(d, mb);
  if (inject && n > 1 && i32[cb + C_INJ_ON] === 1) {
    const left = i32[cb + C_INJ_COUNT]!;
    if (left === 0) {
      let t = i32[cb + C_INJ_INTERVAL]!;
      t = t > 0x1fffffff ? 0x7fffffff : t * 2 + t + (t >>> 1);
      i32[cb + C_INJ_INTERVAL] = t;
      i32[cb + C_INJ_COUNT] = t;
      wwUnlock(d, slot, release);
      const cb2 = d.base(ctx._slot);
      d.i32[cb2 + C_CONTEND] = slot + 1;
      d.i32[cb2 + C_CONTENDGEN] = d.gen(slot);
      return WW_EDEADLK;
    }
    i32[cb + C_INJ_COUNT] = left - 1;
  }
  return WW_OK;
}

function markContended(d: Domain, slot: number, ctx: WwAcquireCtx | null, r: number): void {
  if (!ctx || r !== WW_EDEADLK) return;
  const gen = d.gen(slot);
  const cb = d.base(ctx._slot);
  d.i32[cb + C_CONTEND] = slot + 1;
  d.i32[cb + C_CONTENDGEN] = gen;
}

/** One queued waiter: its node in the shared list and its verdict. */
class Waiter {
  readonly d: Domain;
  readonly slot: number;
  readonly ctx: WwAcquireCtx | null;
  readonly token: number;
  readonly signal: AbortSignal | undefined;
  node = -1;
  lastSeq = 0;
  result = PENDING;

  constructor(
    d: Domain,
    slot: number,
    ctx: WwAcquireCtx | null,
    token: number,
    signal: AbortSignal | undefined,
  ) {
    this.d = d;
    this.slot = slot;
    this.ctx = ctx;
    this.token = token;
    this.signal = signal;
  }

  target(): WaitTarget {
    const mb = this.d.base(this.slot) + MUTEX_OFF;
    return { region: this.d.region, index: mb + MX_SEQ, sleepers: -1 };
  }

  /** Queues in stamp order and makes the first evaluation; returns the verdict or PENDING. */
  start(): number {
    const d = this.d;
    const node = d.alloc(RecordType.EXT);
    this.node = node;
    d.st(node, N_STAMP, this.ctx ? this.ctx._stamp : 0);
    d.st(node, N_CTX, this.ctx ? 1 : 0);
    if (this.ctx) {
      d.st(this.ctx._slot, C_WAITGEN, d.gen(this.slot));
      d.st(this.ctx._slot, C_WAITSLOT, this.slot + 1);
    }
    const mb = d.base(this.slot) + MUTEX_OFF;
    lockWord(d.region, mb + MX_WLOCK);
    try {
      const behind = this.#insert(mb);
      Atomics.add(d.i32, mb + MX_NWAIT, 1);
      this.lastSeq = Atomics.load(d.i32, mb + MX_SEQ);
      this.result = this.#evaluate(mb);
      // Wait-Die: younger contexts queued behind us must look again (they may have to die).
      if (this.result === PENDING && behind) wakeWaiters(d, mb);
      return this.result;
    } finally {
      unlockWord(d.region, mb + MX_WLOCK);
      flushPuts(d);
    }
  }

  /** The waiter's `done()`: re-evaluates when the wake counter moved (or an abort is pending). */
  poll(): boolean {
    const d = this.d;
    const mb = d.base(this.slot) + MUTEX_OFF;
    const seq = Atomics.load(d.i32, mb + MX_SEQ);
    if (seq === this.lastSeq && !this.signal?.aborted) return false;
    this.lastSeq = seq;
    lockWord(d.region, mb + MX_WLOCK);
    try {
      this.result = this.#evaluate(mb);
    } finally {
      unlockWord(d.region, mb + MX_WLOCK);
      flushPuts(d);
    }
    return this.result !== PENDING;
  }

  /** Leaves the queue without the lock (an async wait was aborted). */
  cancel(): void {
    if (this.node < 0) return;
    const d = this.d;
    const mb = d.base(this.slot) + MUTEX_OFF;
    lockWord(d.region, mb + MX_WLOCK);
    try {
      this.#dequeue(mb);
    } finally {
      unlockWord(d.region, mb + MX_WLOCK);
    }
  }

  /**
   * Inserts the node (caller holds the wait lock): a context waiter goes before the first
   * younger context waiter (context-less waiters are never overtaken from behind the older
   * ones), a context-less waiter at the tail. Returns true when younger context waiters are
   * queued behind it.
   */
  #insert(mb: number): boolean {
    const d = this.d;
    const nodes: number[] = [];
    for (let n = Atomics.load(d.i32, mb + MX_HEAD); n !== 0; n = d.ld(n - 1, N_NEXT)) {
      nodes.push(n - 1);
    }
    let pos = nodes.length;
    if (this.ctx) {
      const me = this.ctx._stamp;
      for (let i = nodes.length - 1; i >= 0; i--) {
        if (d.ld(nodes[i]!, N_CTX) !== 1) continue;
        if (wwStampAfter(me, d.ld(nodes[i]!, N_STAMP))) break;
        pos = i;
      }
    }
    d.st(this.node, N_NEXT, pos < nodes.length ? nodes[pos]! + 1 : 0);
    d.base(this.slot);
    if (pos === 0) Atomics.store(d.i32, mb + MX_HEAD, this.node + 1);
    else d.st(nodes[pos - 1]!, N_NEXT, this.node + 1);
    for (let i = pos; i < nodes.length; i++) {
      if (d.ld(nodes[i]!, N_CTX) === 1) return true;
    }
    return false;
  }

  #dequeue(mb: number): void {
    const d = this.d;
    const me = this.node;
    if (me < 0) return;
    const next = d.ld(me, N_NEXT);
    d.base(this.slot);
    let prev = -1;
    for (
      let n = Atomics.load(d.i32, mb + MX_HEAD);
      n !== 0 && n - 1 !== me;
      n = d.ld(prev, N_NEXT)
    ) {
      prev = n - 1;
    }
    if (prev < 0) {
      d.base(this.slot);
      Atomics.store(d.i32, mb + MX_HEAD, next);
    } else {
      d.st(prev, N_NEXT, next);
    }
    d.base(this.slot);
    Atomics.sub(d.i32, mb + MX_NWAIT, 1);
    this.node = -1;
    d.free(me);
    if (this.ctx) d.st(this.ctx._slot, C_WAITSLOT, 0);
  }

  /** One round of the kernel's wait loop (caller holds the wait lock). */
  #evaluate(mb: number): number {
    const d = this.d;
    d.base(this.slot);
    let owner = Atomics.load(d.i32, mb + MX_OWNER);
    if (owner === 0) {
      owner = Atomics.compareExchange(d.i32, mb + MX_OWNER, 0, this.token);
      if (owner === 0) {
        this.#dequeue(mb);
        return WW_OK;
      }
    }
    if (this.signal?.aborted) {
      this.#dequeue(mb);
      return WW_EINTR;
    }
    const ctx = this.ctx;
    if (!ctx) return PENDING;
    const cb = d.base(ctx._slot);
    const i32 = d.i32;
    // A context that holds nothing can always wait: it blocks nobody.
    if (i32[cb + C_ACQUIRED] === 0) return PENDING;
    if (ctx._class.isWaitDie) {
      if (owner > 0 && wwStampAfter(ctx._stamp, owner)) {
        this.#dequeue(mb);
        return WW_EDEADLK;
      }
      // Any context waiter ahead of us is older (the queue is in stamp order): die.
      for (let n = Atomics.load(i32, mb + MX_HEAD); n !== 0 && n - 1 !== this.node; ) {
        if (d.ld(n - 1, N_CTX) === 1) {
          this.#dequeue(mb);
          return WW_EDEADLK;
        }
        n = d.ld(n - 1, N_NEXT);
      }
      return PENDING;
    }
    if (Atomics.load(i32, cb + C_WOUNDED) !== 0) {
      this.#dequeue(mb);
      return WW_EDEADLK;
    }
    if (owner > 0 && wwStampAfter(owner, ctx._stamp)) wound(d, mb, owner);
    return PENDING;
  }
}

/**
 * Wound-Wait: marks the younger holder (stamp `owner`) of mutex `mb` wounded and wakes it if it
 * is waiting on some lock. The holder context is read from the mutex and checked by stamp; when
 * it is not published yet, the holder itself wakes the waiters after publishing it, and the
 * wound happens on that re-evaluation.
 */
function wound(d: Domain, mb: number, owner: number): void {
  const cs = Atomics.load(d.i32, mb + MX_CTX);
  const cg = Atomics.load(d.i32, mb + MX_CTXGEN);
  if (cs === 0 || !d.tryGet(cs - 1, cg, RecordType.WW_ACQUIRE_CTX)) return;
  try {
    const hb = d.base(cs - 1);
    if (Atomics.load(d.i32, hb + C_STAMP) !== owner) return;
    if (Atomics.exchange(d.i32, hb + C_WOUNDED, 1) !== 0) return;
    const ws = Atomics.load(d.i32, hb + C_WAITSLOT);
    const wg = Atomics.load(d.i32, hb + C_WAITGEN);
    if (ws === 0) return;
    const wb = d.base(ws - 1);
    const type = (Atomics.load(d.i32, wb + R_FLAGS) & TYPE_MASK) >>> TYPE_SHIFT;
    if (type !== RecordType.WW_MUTEX && type !== RecordType.DMA_RESV) return;
    if (!d.tryGet(ws - 1, wg, type as RecordType)) return;
    // Only bump the wake counter: the record stays alive while we hold the reference. The
    // reference is dropped after the caller left its wait lock: if it is the last one, the
    // release may run arbitrary code (fence callbacks) that must not run under a wait lock.
    wakeWaiters(d, d.base(ws - 1) + MUTEX_OFF);
    deferredPuts.push(ws - 1, type);
  } finally {
    ctxPut(d, cs - 1);
  }
}

const releasers = new Map<number, ReleaseFn>();

/** @internal Registers how to release a record type that embeds a mutex. */
export function registerMutexOwner(type: RecordType, release: ReleaseFn): void {
  releasers.set(type, release);
}

/** References to drop once the current wait lock is released (slot, type pairs). */
const deferredPuts: number[] = [];

function flushPuts(d: Domain): void {
  while (deferredPuts.length > 0) {
    const type = deferredPuts.pop()!;
    const slot = deferredPuts.pop()!;
    if (d.put(slot)) releasers.get(type)?.(d, slot);
  }
}

/**
 * @internal Blocking lock. Returns WW_OK, WW_EDEADLK or WW_EALREADY (WW_EINTR only when `signal`
 * was already aborted: a blocked thread cannot see a later abort). Throws for misuse.
 */
export function wwLock(
  d: Domain,
  slot: number,
  ctx: WwAcquireCtx | null,
  slow: boolean,
  release: ReleaseFn,
  signal?: AbortSignal,
): number {
  mightSleep(slow ? 'ww_mutex_lock_slow' : 'ww_mutex_lock');
  if (ctx) {
    const r = ctxEnter(d, slot, ctx, slow);
    if (r !== WW_OK) return r;
  }
  const token = ctx ? ctx._stamp : THREAD_TOKEN;
  const annotated = annotateAcquire(d, slot, ctx, false);
  const mb = d.base(slot) + MUTEX_OFF;
  let r: number;
  if (Atomics.compareExchange(d.i32, mb + MX_OWNER, 0, token) === 0) {
    r = WW_OK;
  } else {
    const w = new Waiter(d, slot, ctx, token, signal);
    try {
      r = w.start();
      if (r === PENDING && wwHeldBySelf(d, slot)) {
        // A blocked thread cannot release what it holds: the wait would never end.
        throw new DmaBufError(
          'EDEADLK',
          'recursive locking: this thread already holds the lock (blocking wait would never end)',
        );
      }
      if (r === PENDING) {
        waitUntil(w.target(), () => w.poll(), Number.POSITIVE_INFINITY);
        r = w.result;
      }
    } catch (e) {
      w.cancel();
      annotateUndo(d, slot, annotated);
      throw e;
    }
  }
  if (r === WW_OK) r = acquiredLock(d, slot, ctx, !slow, release);
  if (r !== WW_OK) {
    markContended(d, slot, ctx, r);
    annotateUndo(d, slot, annotated);
  }
  return r;
}

function acquiredCount(d: Domain, ctx: WwAcquireCtx): number {
  return d.ld(ctx._slot, C_ACQUIRED);
}

/**
 * @internal Asynchronous lock: never blocks the event loop. Returns WW_OK, WW_EDEADLK,
 * WW_EALREADY or, when `signal` aborts, WW_EINTR.
 */
export async function wwLockAsync(
  d: Domain,
  slot: number,
  ctx: WwAcquireCtx | null,
  slow: boolean,
  release: ReleaseFn,
  signal?: AbortSignal,
): Promise<number> {
  if (ctx) {
    const r = ctxEnter(d, slot, ctx, slow);
    if (r !== WW_OK) return r;
  }
  const token = ctx ? ctx._stamp : THREAD_TOKEN;
  const annotated = annotateAcquire(d, slot, ctx, false);
  const mb = d.base(slot) + MUTEX_OFF;
  let r: number;
  if (Atomics.compareExchange(d.i32, mb + MX_OWNER, 0, token) === 0) {
    r = WW_OK;
  } else {
    const w = new Waiter(d, slot, ctx, token, signal);
    try {
      r = w.start();
      if (r === PENDING) {
        await waitUntilAsync(w.target(), () => w.poll(), Number.POSITIVE_INFINITY, signal);
        r = w.result;
      }
    } catch (e) {
      w.cancel();
      if (!(e instanceof DmaBufError && e.code === 'ERESTARTSYS')) {
        annotateUndo(d, slot, annotated);
        throw e;
      }
      r = WW_EINTR;
    }
  }
  if (r === WW_OK) r = acquiredLock(d, slot, ctx, !slow, release);
  if (r !== WW_OK) {
    markContended(d, slot, ctx, r);
    annotateUndo(d, slot, annotated);
  }
  return r;
}

/** @internal Trylock (`ww_mutex_trylock`): no deadlock logic; false for a lock the ctx holds. */
export function wwTrylock(
  d: Domain,
  slot: number,
  ctx: WwAcquireCtx | null,
  release: ReleaseFn,
): boolean {
  if (ctx && ctxEnter(d, slot, ctx, false) === WW_EALREADY) return false;
  const token = ctx ? ctx._stamp : THREAD_TOKEN;
  const mb = d.base(slot) + MUTEX_OFF;
  if (Atomics.compareExchange(d.i32, mb + MX_OWNER, 0, token) !== 0) return false;
  const first = lockdepEnabled() && !(ctx && acquiredCount(d, ctx) > 0);
  acquiredLock(d, slot, ctx, false, release);
  if (first) lockAcquire(classOf(d, slot)._mutexClass, { trylock: true });
  return true;
}

/**
 * @internal Whether the calling thread holds mutex `slot` (without a context, or with a context
 * of this thread).
 */
export function wwHeldBySelf(d: Domain, slot: number): boolean {
  const mb = d.base(slot) + MUTEX_OFF;
  const owner = Atomics.load(d.i32, mb + MX_OWNER);
  if (owner === THREAD_TOKEN) return true;
  if (owner <= 0) return false;
  const cs = Atomics.load(d.i32, mb + MX_CTX);
  if (cs === 0) return false;
  return d.ld(cs - 1, C_THREAD) === SELF && d.ld(cs - 1, C_STAMP) === owner;
}

/**
 * @internal Unlock (`ww_mutex_unlock`): drops the holder context's count, wakes the waiters,
 * puts the reference the lock held (releasing the object through `release` if it was the last).
 *
 * @throws {DmaBufError} EPERM when the lock is free or held by another thread or context.
 */
export function wwUnlock(d: Domain, slot: number, release: ReleaseFn): void {
  const mb = d.base(slot) + MUTEX_OFF;
  let i32 = d.i32;
  const owner = Atomics.load(i32, mb + MX_OWNER);
  if (owner === 0) throw new DmaBufError('EPERM', 'unlock of a ww_mutex that is not locked');
  let cls: WwClass | undefined;
  if (owner < 0) {
    if (owner !== THREAD_TOKEN) {
      throw new DmaBufError('EPERM', 'unlock of a ww_mutex held by another thread');
    }
    if (lockdepEnabled()) cls = classOf(d, slot);
  } else {
    const cs = Atomics.load(i32, mb + MX_CTX) - 1;
    if (cs < 0) throw new DmaBufError('EPERM', 'unlock of a ww_mutex held by another thread');
    const cb = d.base(cs);
    i32 = d.i32;
    if (i32[cb + C_THREAD] !== SELF || i32[cb + C_STAMP] !== owner) {
      throw new DmaBufError('EPERM', 'unlock of a ww_mutex held by another thread');
    }
    Atomics.store(i32, mb + MX_CTX, 0);
    Atomics.store(i32, mb + MX_CTXGEN, 0);
    const n = i32[cb + C_ACQUIRED]! - 1;
    Atomics.store(i32, cb + C_ACQUIRED, n);
    if (n === 0) {
      if (lockdepEnabled()) cls = classOf(d, slot);
      ctxPut(d, cs);
      i32 = d.i32;
    }
  }
  Atomics.store(i32, mb + MX_OWNER, 0);
  if (Atomics.load(i32, mb + MX_NWAIT) > 0) wakeWaiters(d, mb);
  if (cls) lockRelease(cls._mutexClass);
  if (d.put(slot)) release(d, slot);
}

/** @internal True while mutex `slot` is held. */
export function wwIsLocked(d: Domain, slot: number): boolean {
  return d.ld(slot, MUTEX_OFF + MX_OWNER) !== 0;
}

/**
 * @internal The context holding mutex `slot`, or null (free, held without a context, or the
 * holder is just publishing itself). A context created in this thread is returned as its own
 * handle; any other as a borrowed handle (no reference: valid while it holds the lock).
 */
export function wwLockingCtx(d: Domain, slot: number): WwAcquireCtx | null {
  const mb = d.base(slot) + MUTEX_OFF;
  const owner = Atomics.load(d.i32, mb + MX_OWNER);
  if (owner <= 0) return null;
  const cs = Atomics.load(d.i32, mb + MX_CTX);
  const cg = Atomics.load(d.i32, mb + MX_CTXGEN);
  if (cs === 0) return null;
  const mine = localCtx.get(cs - 1)?.deref();
  if (mine && mine._gen === cg && mine.alive) return mine;
  if (!d.isLive(cs - 1, cg, RecordType.WW_ACQUIRE_CTX)) return null;
  if (d.ld(cs - 1, C_STAMP) !== owner) return null;
  return WwAcquireCtx._borrow(cs - 1, cg);
}

// ---- the standalone mutex ----------------------------------------------------------------------

function releaseMutex(d: Domain, slot: number): void {
  d.free(slot);
}
registerMutexOwner(RecordType.WW_MUTEX, releaseMutex);

const mutexKind = new HandleKind('ww-mutex', RecordType.WW_MUTEX, (slot) => {
  const d = domain();
  if (d.put(slot)) releaseMutex(d, slot);
});

const ADOPT_MUTEX: unique symbol = Symbol('adopt-mutex');

/** Options of the asynchronous and interruptible locks. */
export interface WwLockOptions {
  /** Makes the lock interruptible: aborting it fails the lock with `EINTR`. */
  signal?: AbortSignal;
}

/** @internal Validates an optional context argument. */
export function checkCtxArg(ctx: unknown): WwAcquireCtx | null {
  if (ctx === undefined || ctx === null) return null;
  if (!(ctx instanceof WwAcquireCtx)) throw new DmaBufError('EINVAL', 'ctx must be a WwAcquireCtx');
  return ctx;
}

/** @internal Validates a mandatory context argument. */
export function needCtx(ctx: unknown, what: string): WwAcquireCtx {
  const c = checkCtxArg(ctx);
  if (!c) throw new DmaBufError('EINVAL', `${what} needs an acquire context`);
  return c;
}

/**
 * A wound/wait mutex shared between threads (`struct ww_mutex`).
 *
 * @example
 * ```ts
 * const a = new WwMutex(), b = new WwMutex();
 * using ctx = new WwAcquireCtx();
 * a.lock(ctx);
 * try {
 *   b.lock(ctx);
 * } catch (e) {
 *   if (!(e instanceof DmaBufError && e.code === 'EDEADLK')) throw e;
 *   a.unlock();
 *   b.lockSlow(ctx);
 *   a.lock(ctx);
 * }
 * ```
 */
export class WwMutex extends SharedObject {
  /**
   * Creates an unlocked mutex of class `cls` (`ww_mutex_init`).
   *
   * @throws {DmaBufError} EINVAL when `cls` is not a WwClass.
   */
  constructor(cls?: WwClass);
  /** @internal */
  constructor(adopt: typeof ADOPT_MUTEX, slot: number, gen: number, owned: boolean);
  constructor(
    a: WwClass | typeof ADOPT_MUTEX = WwClass.reservation,
    b?: number,
    c?: number,
    e?: boolean,
  ) {
    if (a === ADOPT_MUTEX) {
      super(b as number, c as number, e as boolean);
      return;
    }
    if (!(a instanceof WwClass)) throw new DmaBufError('EINVAL', 'cls must be a WwClass');
    const d = domain();
    const slot = d.alloc(RecordType.WW_MUTEX);
    wwInit(d, slot, a);
    super(slot, d.gen(slot), true);
  }

  /** @internal */
  override _kind(): HandleKind {
    return mutexKind;
  }

  /**
   * Adopts a mutex handed over by another thread; the result is the same mutex.
   *
   * @throws {DmaBufError} EINVAL for a message that is not a ww_mutex; EBADF when it was already
   *   imported or the mutex is gone; EXDEV for another domain's mutex.
   */
  static import(msg: SharedMessage): WwMutex {
    claim(msg, mutexKind);
    return new WwMutex(ADOPT_MUTEX, msg.slot, msg.gen, true);
  }

  /** Gives back the reference of a message that will never be imported. */
  static override releaseShared(msg: SharedMessage): void {
    SharedObject.releaseShared(msg, mutexKind);
  }

  /** The mutex's class. */
  get class(): WwClass {
    return classOf(this._check(), this._slot);
  }

  /**
   * Blocks until the lock is taken (`ww_mutex_lock`).
   *
   * @throws {DmaBufError} EDEADLK: back off (release every lock of `ctx`, then `lockSlow` this
   *   one); EALREADY: `ctx` already holds it; EINVAL/EPERM for misuse (see the module notes);
   *   EDEADLK also when this thread holds the lock without a context (would hang forever).
   */
  lock(ctx?: WwAcquireCtx | null): void {
    const d = this._check();
    const r = wwLock(d, this._slot, checkCtxArg(ctx), false, releaseMutex);
    if (r !== WW_OK) throw wwError(r, 'ww_mutex_lock');
  }

  /**
   * Takes the lock without blocking the event loop. With `signal` it is interruptible: an abort
   * fails it with `EINTR` (`ww_mutex_lock_interruptible`).
   *
   * @throws {DmaBufError} as `lock`, plus EINTR.
   */
  async lockAsync(ctx?: WwAcquireCtx | null, opts?: WwLockOptions): Promise<void> {
    const d = this._check();
    const r = await wwLockAsync(d, this._slot, checkCtxArg(ctx), false, releaseMutex, opts?.signal);
    if (r !== WW_OK) throw wwError(r, 'ww_mutex_lock_interruptible');
  }

  /**
   * `ww_mutex_lock_interruptible`: {@linkcode WwMutex.lockAsync} with an abort signal.
   *
   * @throws {DmaBufError} EINTR when `opts.signal` aborts; otherwise as `lock`.
   */
  lockInterruptible(ctx: WwAcquireCtx | null, opts: WwLockOptions): Promise<void> {
    return this.lockAsync(ctx, opts);
  }

  /**
   * The slow path after `EDEADLK` (`ww_mutex_lock_slow`): with every lock of `ctx` released,
   * blocks until this (the contended) lock is taken. Never fails with EDEADLK.
   *
   * @throws {DmaBufError} EINVAL when `ctx` still holds locks or contended on another lock.
   */
  lockSlow(ctx: WwAcquireCtx): void {
    const d = this._check();
    const r = wwLock(d, this._slot, needCtx(ctx, 'lockSlow'), true, releaseMutex);
    if (r !== WW_OK) throw wwError(r, 'ww_mutex_lock_slow');
  }

  /**
   * `ww_mutex_lock_slow_interruptible`, without blocking the event loop.
   *
   * @throws {DmaBufError} EINTR when `opts.signal` aborts; EINVAL as `lockSlow`.
   */
  async lockSlowAsync(ctx: WwAcquireCtx, opts?: WwLockOptions): Promise<void> {
    const d = this._check();
    const c = needCtx(ctx, 'lockSlow');
    const r = await wwLockAsync(d, this._slot, c, true, releaseMutex, opts?.signal);
    if (r !== WW_OK) throw wwError(r, 'ww_mutex_lock_slow_interruptible');
  }

  /** `ww_mutex_lock_slow_interruptible` (alias of {@linkcode WwMutex.lockSlowAsync}). */
  lockSlowInterruptible(ctx: WwAcquireCtx, opts: WwLockOptions): Promise<void> {
    return this.lockSlowAsync(ctx, opts);
  }

  /**
   * Takes the lock if it is free (`ww_mutex_trylock`); no deadlock logic. False when held,
   * including by `ctx` itself. (The context argument exists since about v5.16; older kernels
   * had a context-less trylock only.)
   */
  trylock(ctx?: WwAcquireCtx | null): boolean {
    const d = this._check();
    return wwTrylock(d, this._slot, checkCtxArg(ctx), releaseMutex);
  }

  /**
   * Releases the lock (`ww_mutex_unlock`).
   *
   * @throws {DmaBufError} EPERM when the lock is not held by this thread (or one of its contexts).
   */
  unlock(): void {
    const d = this._check();
    wwUnlock(d, this._slot, releaseMutex);
  }

  /** True while any thread holds the lock (`ww_mutex_is_locked`). */
  isLocked(): boolean {
    return wwIsLocked(this._check(), this._slot);
  }

  /** True when this thread holds the lock (without a context or with one of its contexts). */
  isHeld(): boolean {
    return wwHeldBySelf(this._check(), this._slot);
  }

  /**
   * The context holding the lock, or null when it is free or held without one (`lock->ctx`).
   * See {@linkcode wwLockingCtx} for what handle is returned.
   */
  get ctx(): WwAcquireCtx | null {
    return wwLockingCtx(this._check(), this._slot);
  }
}
