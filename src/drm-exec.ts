/**
 * drm_exec: lock many reservation objects in one transaction without deadlocking
 * (drivers/gpu/drm/drm_exec.c, include/drm/drm_exec.h, the loop of ww-mutex-design.rst).
 *
 * This is the answer to the "atomic prepare many buffers" request: every object of a set is
 * locked under one acquire context of `reservation_ww_class`; when a lock fails with `EDEADLK`
 * (an older transaction holds or waits for it) everything is unlocked, the contended object is
 * locked first through the slow path, and the set is locked again with the same context (same
 * stamp, so the transaction ages and eventually wins). Two threads locking overlapping sets in
 * any order never deadlock.
 *
 * The kernel's `drm_exec_until_all_locked { ... drm_exec_retry_on_contention() }` loop with its
 * label and goto becomes a closure that {@linkcode DrmExec.untilAllLocked} re-runs: a lock call
 * inside the body that hits contention throws `EDEADLK` with `contended` set, which unwinds the
 * body; the loop unlocks everything and runs the body again. The one-call helpers
 * {@linkcode lockAll} / {@linkcode lockAllAsync} lock a whole set this way and return the
 * `DrmExec`, which unlocks everything on `dispose()` (or `using`).
 *
 * Choices:
 * - The exec keeps the handles it was given; they must stay undisposed until `fini()`. Each
 *   locked object is kept alive by its lock; the contended one by a reference of the exec.
 * - `DRM_EXEC_INTERRUPTIBLE_WAIT` makes locks interruptible through the exec's `signal`: the
 *   async forms see an abort at any time, the blocking forms only one that happened before they
 *   block (a blocked thread runs no code).
 * - `lockAll` always ignores duplicates (`DRM_EXEC_IGNORE_DUPLICATES`), as most drivers do.
 *
 * @module
 */
import { DmaResv, resvRelease } from './dma-resv.js';
import { domain } from './substrate/domain.js';
import { DmaBufError } from './substrate/errno.js';
import {
  WW_EALREADY,
  WW_EDEADLK,
  WW_OK,
  WwAcquireCtx,
  WwClass,
  wwError,
  wwLock,
  wwLockAsync,
  wwUnlock,
} from './ww-mutex.js';

/** Locks are interruptible (through the exec's `signal`). */
export const DRM_EXEC_INTERRUPTIBLE_WAIT = 1 << 0;
/** Locking an object already locked by this exec is not an error (`EALREADY` becomes success). */
export const DRM_EXEC_IGNORE_DUPLICATES = 1 << 1;

const DUMMY: unique symbol = Symbol('drm_exec_dummy');

/** Options of a {@linkcode DrmExec}. */
export interface DrmExecOptions {
  /** The abort signal of interruptible locks (with `DRM_EXEC_INTERRUPTIBLE_WAIT`). */
  signal?: AbortSignal;
}

// Unlocking goes through the resv's own unlock so the debug slot reset happens; the internal
// unlock is used only when the handle was disposed by mistake (the lock still holds the record).
function unlockResv(obj: DmaResv): void {
  if (obj.alive) obj.unlock();
  else wwUnlock(domain(), obj._slot, resvRelease);
}

function sameObject(a: DmaResv, b: DmaResv): boolean {
  return a._slot === b._slot && a._gen === b._gen;
}

/**
 * The lock-many state (`struct drm_exec`).
 *
 * @example
 * ```ts
 * using exec = new DrmExec(DRM_EXEC_IGNORE_DUPLICATES);
 * exec.untilAllLocked((e) => {
 *   for (const obj of objects) e.prepareObj(obj, 1);
 * });
 * for (const obj of exec.objects) obj.addFence(fence, DmaResvUsage.WRITE);
 * ```
 */
export class DrmExec implements Disposable {
  /** `DRM_EXEC_*` flags. */
  readonly flags: number;
  /** The abort signal for interruptible locks. */
  readonly signal: AbortSignal | undefined;
  /** The acquire context (`ticket`), created when the loop is entered. */
  ticket: WwAcquireCtx | null = null;
  /** How many times the loop backed off (unlocked everything and started over). */
  retries = 0;
  #objects: DmaResv[] = [];
  #contended: DmaResv | null | typeof DUMMY = DUMMY;
  #prelocked: DmaResv | null = null;
  #finished = false;

  /**
   * `drm_exec_init`.
   *
   * @throws {DmaBufError} EINVAL for unknown flags.
   */
  constructor(flags = 0, opts: DrmExecOptions = {}) {
    if (!Number.isInteger(flags) || (flags & ~3) !== 0) {
      throw new DmaBufError('EINVAL', 'unknown drm_exec flags');
    }
    this.flags = flags;
    this.signal = opts.signal;
  }

  /** The locked objects, in locking order (`drm_exec_for_each_locked_object`). */
  get objects(): readonly DmaResv[] {
    return this.#objects;
  }

  /** The object the last pass backed off on, if the loop is about to retry. */
  get contended(): DmaResv | null {
    return this.#contended === DUMMY ? null : this.#contended;
  }

  #interruptSignal(): AbortSignal | undefined {
    return (this.flags & DRM_EXEC_INTERRUPTIBLE_WAIT) !== 0 ? this.signal : undefined;
  }

  #checkLive(): void {
    if (this.#finished) throw new DmaBufError('EINVAL', 'drm_exec used after fini');
  }

  /**
   * The loop head (`drm_exec_cleanup`): true when the body must run (first pass, or after a
   * back-off, with everything unlocked), false when the last pass locked everything (the
   * context is then marked done).
   */
  cleanup(): boolean {
    this.#checkLive();
    if (this.#contended === DUMMY) {
      this.#contended = null;
      this.ticket = new WwAcquireCtx(WwClass.reservation);
      return true;
    }
    if (this.#contended === null) {
      this.ticket?.done();
      return false;
    }
    this.retries++;
    this.#unlockAll();
    return true;
  }

  /** True when a lock of this pass hit contention (`drm_exec_retry_on_contention`'s test). */
  retryOnContention(): boolean {
    return this.#contended !== null && this.#contended !== DUMMY;
  }

  #unlockAll(): void {
    const objs = this.#objects;
    this.#objects = [];
    for (let i = objs.length - 1; i >= 0; i--) unlockResv(objs[i]!);
    this.#prelocked = null;
  }

  #ticket(): WwAcquireCtx {
    this.#checkLive();
    if (!this.ticket || this.#contended === DUMMY) {
      throw new DmaBufError(
        'EINVAL',
        'lock objects inside untilAllLocked (the loop was not entered)',
      );
    }
    return this.ticket;
  }

  /** Result handling common to both lock forms; returns normally when the object is locked. */
  #after(obj: DmaResv, r: number): void {
    if (r === WW_OK) {
      this.#objects.push(obj);
      return;
    }
    if (r === WW_EDEADLK) {
      domain().get(obj._slot);
      this.#contended = obj;
      throw wwError(r, 'drm_exec_lock_obj');
    }
    if (r === WW_EALREADY && (this.flags & DRM_EXEC_IGNORE_DUPLICATES) !== 0) return;
    throw wwError(r, 'drm_exec_lock_obj');
  }

  #dropPrelocked(): void {
    const c = this.#prelocked;
    this.#prelocked = null;
    if (c && domain().put(c._slot)) resvRelease(domain(), c._slot);
  }

  /** Takes the contended object through the slow path; true when `obj` is that object. */
  #slowDone(obj: DmaResv, r: number): boolean {
    const c = this.#prelocked!;
    if (r !== WW_OK) {
      this.#dropPrelocked();
      throw wwError(r, 'drm_exec_lock_obj (slow path)');
    }
    this.#objects.push(c);
    // The lock keeps the record alive now: drop the exec's reference.
    domain().put(c._slot);
    if (sameObject(obj, c)) {
      this.#prelocked = null;
      return true;
    }
    return false;
  }

  #takeContended(): DmaResv | null {
    const c = this.#contended;
    if (c === null || c === DUMMY) return null;
    this.#contended = null;
    this.#prelocked = c;
    return c;
  }

  #prelockedMatch(obj: DmaResv): boolean {
    const p = this.#prelocked;
    if (p && sameObject(obj, p)) {
      this.#prelocked = null;
      return true;
    }
    return false;
  }

  /**
   * Locks `obj` in this transaction (`drm_exec_lock_obj`). On a retried pass the contended object
   * is locked first (slow path) and counts as locked when asked again.
   *
   * @throws {DmaBufError} EDEADLK on contention (leave the body: `untilAllLocked` retries);
   *   EALREADY for a duplicate without `DRM_EXEC_IGNORE_DUPLICATES`; EINTR when interrupted;
   *   EINVAL outside the loop.
   */
  lockObj(obj: DmaResv): void {
    const ticket = this.#ticket();
    const d = obj._check();
    const signal = this.#interruptSignal();
    const c = this.#takeContended();
    if (c) {
      let r: number;
      try {
        r = wwLock(d, c._slot, ticket, true, resvRelease, signal);
      } catch (e) {
        this.#dropPrelocked();
        throw e;
      }
      if (this.#slowDone(obj, r)) return;
    } else if (this.#prelockedMatch(obj)) {
      return;
    }
    this.#after(obj, wwLock(d, obj._slot, ticket, false, resvRelease, signal));
  }

  /** {@linkcode DrmExec.lockObj} without blocking the event loop. */
  async lockObjAsync(obj: DmaResv): Promise<void> {
    const ticket = this.#ticket();
    const d = obj._check();
    const signal = this.#interruptSignal();
    const c = this.#takeContended();
    if (c) {
      let r: number;
      try {
        r = await wwLockAsync(d, c._slot, ticket, true, resvRelease, signal);
      } catch (e) {
        this.#dropPrelocked();
        throw e;
      }
      if (this.#slowDone(obj, r)) return;
    } else if (this.#prelockedMatch(obj)) {
      return;
    }
    this.#after(obj, await wwLockAsync(d, obj._slot, ticket, false, resvRelease, signal));
  }

  /**
   * Locks `obj` and reserves `numFences` slots (`drm_exec_prepare_obj`); a failed reservation
   * unlocks it again.
   *
   * @throws as {@linkcode DrmExec.lockObj}, plus ENOMEM from the reservation.
   */
  prepareObj(obj: DmaResv, numFences: number): void {
    this.lockObj(obj);
    this.#reserve(obj, numFences);
  }

  /** {@linkcode DrmExec.prepareObj} without blocking the event loop. */
  async prepareObjAsync(obj: DmaResv, numFences: number): Promise<void> {
    await this.lockObjAsync(obj);
    this.#reserve(obj, numFences);
  }

  #reserve(obj: DmaResv, n: number): void {
    try {
      obj.reserveFences(n);
    } catch (e) {
      this.unlockObj(obj);
      throw e;
    }
  }

  /** `drm_exec_prepare_array`: prepares each object, stopping at the first error. */
  prepareArray(objs: readonly DmaResv[], numFences: number): void {
    for (const o of objs) this.prepareObj(o, numFences);
  }

  /**
   * Unlocks one locked object and forgets it (`drm_exec_unlock_obj`).
   *
   * @throws {DmaBufError} EINVAL when the exec did not lock it.
   */
  unlockObj(obj: DmaResv): void {
    for (let i = this.#objects.length - 1; i >= 0; i--) {
      if (sameObject(this.#objects[i]!, obj)) {
        const [o] = this.#objects.splice(i, 1);
        unlockResv(o!);
        return;
      }
    }
    throw new DmaBufError('EINVAL', 'drm_exec_unlock_obj: object not locked by this exec');
  }

  /**
   * Runs `body` until it completes with every object it locks held (`drm_exec_until_all_locked`):
   * on contention everything is unlocked and the body runs again with the same context.
   *
   * @throws whatever `body` throws other than the contention `EDEADLK`; the exec keeps what it
   *   locked until `fini()`.
   */
  untilAllLocked(body: (exec: this) => void): void {
    while (this.cleanup()) {
      try {
        body(this);
      } catch (e) {
        if (this.retryOnContention() && e instanceof DmaBufError && e.code === 'EDEADLK') continue;
        throw e;
      }
    }
  }

  /** {@linkcode DrmExec.untilAllLocked} with an asynchronous body. */
  async untilAllLockedAsync(body: (exec: this) => Promise<void> | void): Promise<void> {
    while (this.cleanup()) {
      try {
        await body(this);
      } catch (e) {
        if (this.retryOnContention() && e instanceof DmaBufError && e.code === 'EDEADLK') continue;
        throw e;
      }
    }
  }

  /**
   * Unlocks everything and ends the transaction (`drm_exec_fini`). Idempotent.
   */
  fini(): void {
    if (this.#finished) return;
    this.#unlockAll();
    const c = this.#contended;
    if (c !== null && c !== DUMMY && domain().put(c._slot)) resvRelease(domain(), c._slot);
    this.#contended = null;
    this.#finished = true;
    if (this.ticket) {
      this.ticket.dispose();
    }
  }

  /** Same as `fini()`. */
  dispose(): void {
    this.fini();
  }

  [Symbol.dispose](): void {
    this.fini();
  }
}

/** Options of {@linkcode lockAll}. */
export interface LockAllOptions {
  /** Makes the locks interruptible (`EINTR`); see the module notes for the blocking form. */
  signal?: AbortSignal;
  /** Also reserve this many fence slots on every object (`drm_exec_prepare_obj`). */
  numFences?: number;
}

function toList(objects: Iterable<DmaResv>): DmaResv[] {
  const list = Array.from(objects);
  for (const o of list) {
    if (!(o instanceof DmaResv)) throw new DmaBufError('EINVAL', 'lockAll takes DmaResv objects');
    o._check();
  }
  return list;
}

function flagsOf(opts: LockAllOptions): number {
  return DRM_EXEC_IGNORE_DUPLICATES | (opts.signal ? DRM_EXEC_INTERRUPTIBLE_WAIT : 0);
}

/**
 * Locks every object of `objects` (duplicates allowed) in one transaction, backing off on
 * contention, and returns the exec: dispose it (or `using`) to unlock everything. Blocks the
 * calling thread while waiting.
 *
 * @example
 * ```ts
 * using locked = lockAll([a, b, c], { numFences: 1 });
 * for (const obj of locked.objects) obj.addFence(fence, DmaResvUsage.WRITE);
 * ```
 * @throws {DmaBufError} EINVAL for something that is not a DmaResv; EINTR when `signal` had
 *   aborted; nothing stays locked then.
 */
export function lockAll(objects: Iterable<DmaResv>, opts: LockAllOptions = {}): DrmExec {
  const list = toList(objects);
  const n = opts.numFences;
  const exec = new DrmExec(flagsOf(opts), { signal: opts.signal });
  try {
    exec.untilAllLocked((e) => {
      for (const o of list) {
        if (n === undefined) e.lockObj(o);
        else e.prepareObj(o, n);
      }
    });
    return exec;
  } catch (err) {
    exec.fini();
    throw err;
  }
}

/**
 * {@linkcode lockAll} without blocking the event loop; an abort of `signal` fails it with EINTR
 * at any time.
 */
export async function lockAllAsync(
  objects: Iterable<DmaResv>,
  opts: LockAllOptions = {},
): Promise<DrmExec> {
  const list = toList(objects);
  const n = opts.numFences;
  const exec = new DrmExec(flagsOf(opts), { signal: opts.signal });
  try {
    await exec.untilAllLockedAsync(async (e) => {
      for (const o of list) {
        if (n === undefined) await e.lockObjAsync(o);
        else await e.prepareObjAsync(o, n);
      }
    });
    return exec;
  } catch (err) {
    exec.fini();
    throw err;
  }
}
