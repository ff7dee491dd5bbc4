/**
 * Lock-order checking for fence signalling: a small lockdep for worker threads.
 *
 * ## The rule being checked
 *
 * A fence is a promise that some thread will eventually signal it. Anything a thread must do
 * between publishing a fence and signalling it is the fence's *critical path*. A thread that waits
 * on a fence while holding a lock therefore depends on every lock the critical path of that fence
 * takes: if the signalling side needs the lock the waiter holds, neither makes progress.
 *
 * ```text
 *   thread 1                         thread 2 (will signal F)
 *   lock(A)                          beginSignalling()
 *   wait(F)   <- blocked on thread 2 lock(A)   <- blocked on thread 1
 * ```
 *
 * Such a deadlock is only visible when both sides actually overlap in time, which is rare, so
 * instead of waiting for it we model the fence as a lock and check lock *ordering*, as the
 * kernel's lockdep does. One pseudo lock class, {@linkcode dmaFenceMap} (`dma_fence_map`), stands
 * for "all fences":
 *
 * - A signalling critical path ({@linkcode dmaFenceBeginSignalling} ..
 *   {@linkcode dmaFenceEndSignalling}) holds it as a *reader*. Many sections can run at once
 *   and they do not exclude each other, so a reader is the right model. The read lock is
 *   non-recursive: a recursive reader would hide exactly the read-side ordering problems we want.
 *   Nesting is handled by a cookie instead: an inner begin returns `true` and its end is a no-op.
 * - Every wait on a fence ({@linkcode dmaFenceMightWait}) takes and drops it as a *writer*.
 *
 * Each time a thread acquires class B while holding class A, the edge A -> B is added to a
 * dependency graph shared by all threads. An edge that closes a cycle is a possible deadlock and
 * is reported with the whole cycle, e.g.
 * `dma_fence_map (read, signalling section) -> mutexA -> dma_fence_map (write, wait)`.
 * As in lockdep, a cycle only counts when it is *strong*: two consecutive edges where a lock is
 * entered as a recursive reader and left while held shared cannot block each other. (Our own
 * signalling read lock is non-recursive, so every cycle through it counts.)
 *
 * A wait inside a signalling section is allowed on its own (a signalling path may have to wait
 * for another fence). To allow it, the wait first drops the section's read hold and retakes it
 * afterwards. What is reported is any lock that was acquired inside the section and is still held
 * at the wait: that lock is then both "needed to signal" and "held while waiting".
 *
 * Atomic context: code that must never block (fence callbacks, holders of spin-style locks) is
 * marked with {@linkcode withNoSleep} or by holding a `LockClass` created with `atomic: true`.
 * A blocking wait there is reported by {@linkcode mightSleep}. Opening a signalling section in
 * such a context is a no-op (returns `true`): like the kernel, we rely on the sleep check there.
 *
 * ## Threads
 *
 * Held locks, section nesting, no-sleep regions and recorded reports are per thread (every worker
 * has its own module instance). The dependency graph and the class-name table live in one
 * `SharedArrayBuffer`, so an order recorded in one worker is checked against orders recorded in
 * any other. The buffer is published with `setEnvironmentData('dmabuf:lockdep', sab)` so that
 * workers created later inherit it; a worker created before this module was loaded can be attached
 * with {@linkcode lockdepShareState} / {@linkcode lockdepAttachState}.
 *
 * ## Cost
 *
 * Off by default (on when `DMABUF_DEBUG` is `1` or `lockdep`). When off, every entry point returns
 * after testing one module-level boolean.
 *
 * ## Limits
 *
 * Held locks are tracked per thread, synchronously. Do not keep a section or an annotated lock
 * open across an `await`: other tasks of the same thread would be attributed to it. At most
 * {@linkcode LOCKDEP_MAX_CLASSES} lock classes exist per shared state; further classes are not
 * tracked (a warning is emitted once).
 *
 * @module
 */

import {
  threadId as currentThreadId,
  getEnvironmentData,
  setEnvironmentData,
} from 'node:worker_threads';
import { type SharedRegion, sabBackend } from './substrate/backend.js';
import { DmaBufError } from './substrate/errno.js';
import { lockWord, unlockWord } from './substrate/lock.js';

/** How a violation is reported: thrown as a `DmaBufError`, or appended to {@linkcode lockdepReports}. */
export type LockdepMode = 'throw' | 'record';

/** One detected violation. */
export interface LockdepReport {
  /** `deadlock`: a lock-order cycle; `might-sleep`: a blocking wait where blocking is forbidden;
   * `unbalanced`: a release without a matching acquire. */
  kind: 'deadlock' | 'might-sleep' | 'unbalanced';
  /** Human-readable description naming the locks involved. */
  message: string;
  /** Names of the lock classes involved (the cycle for a deadlock, the held locks otherwise). */
  locks: string[];
  /** `threadId` of the worker (0 for the main thread) that detected it. */
  thread: number;
}

/** Maximum number of distinct lock classes in one shared state. */
export const LOCKDEP_MAX_CLASSES = 256;
/** Maximum length of a lock class name, in UTF-8 bytes. */
export const LOCKDEP_MAX_NAME_BYTES = 127;

/** Key under which the shared state is published with `setEnvironmentData`. */
export const LOCKDEP_ENV_KEY = 'dmabuf:lockdep';

// ---------------------------------------------------------------------------------------------
// Shared state layout
//
//   [0, 64)                header, Int32 words (see H_*)
//   [64, 64 + 256 * 128)   class-name table: per class one byte of length then UTF-8 bytes
//   [EDGES_OFF, ...)       adjacency matrix, one Uint16 per (from, to) pair; bit (p * 3 + n) set
//                          when `to` was acquired in mode n while `from` was held in mode p.

const MAGIC = 0x4c4b4450; // "LKDP"
const LAYOUT = 1;
const H_MAGIC = 0;
const H_LAYOUT = 1;
const H_LOCK = 2; // 0 free, 1 taken, 2 taken with waiters
const H_COUNT = 3; // registered classes
const HEADER_BYTES = 64;
const NAME_SLOT = 128;
const NAMES_OFF = HEADER_BYTES;
const EDGES_OFF = NAMES_OFF + LOCKDEP_MAX_CLASSES * NAME_SLOT;
const STATE_BYTES = EDGES_OFF + LOCKDEP_MAX_CLASSES * LOCKDEP_MAX_CLASSES * 2;

/** Acquisition modes. A "shared" holder is one held in READ or RECURSIVE mode. */
const WRITE = 0;
const READ = 1;
const RECURSIVE = 2;
type Mode = typeof WRITE | typeof READ | typeof RECURSIVE;

interface SharedState {
  sab: SharedArrayBuffer;
  /** The state buffer as a substrate region, for its lock word. */
  region: SharedRegion;
  header: Int32Array;
  names: Uint8Array;
  edges: Uint16Array;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function wrapState(sab: SharedArrayBuffer): SharedState {
  if (!(sab instanceof SharedArrayBuffer) || sab.byteLength < STATE_BYTES) {
    throw new DmaBufError('EINVAL', 'lockdep: not a lockdep shared state buffer');
  }
  const header = new Int32Array(sab, 0, HEADER_BYTES / 4);
  if (Atomics.load(header, H_MAGIC) !== MAGIC || Atomics.load(header, H_LAYOUT) !== LAYOUT) {
    throw new DmaBufError('EINVAL', 'lockdep: shared state has a foreign or outdated layout');
  }
  return {
    sab,
    region: sabBackend.attachRegion({ backend: 'sab', buffer: sab }),
    header,
    names: new Uint8Array(sab, NAMES_OFF, LOCKDEP_MAX_CLASSES * NAME_SLOT),
    edges: new Uint16Array(sab, EDGES_OFF, LOCKDEP_MAX_CLASSES * LOCKDEP_MAX_CLASSES),
  };
}

function createState(): SharedState {
  const sab = new SharedArrayBuffer(STATE_BYTES);
  const header = new Int32Array(sab, 0, HEADER_BYTES / 4);
  Atomics.store(header, H_LAYOUT, LAYOUT);
  Atomics.store(header, H_MAGIC, MAGIC);
  return wrapState(sab);
}

function initialState(): SharedState {
  const inherited = getEnvironmentData(LOCKDEP_ENV_KEY);
  if (inherited instanceof SharedArrayBuffer) {
    try {
      return wrapState(inherited);
    } catch {
      // Unusable: start our own below.
    }
  }
  const s = createState();
  setEnvironmentData(LOCKDEP_ENV_KEY, s.sab);
  return s;
}

let shared: SharedState = initialState();
/** Bumped whenever `shared` is replaced, so cached class ids are recomputed. */
let stateEpoch = 0;
/** Per-thread caches for the current shared state. */
let idCache = new Map<string, number>();
let nameCache: string[] = [];
let overflowWarned = false;

/**
 * Short critical sections on the shared state (name registration, cycle check + edge insert)
 * take the substrate's lock word. It is an internal, bounded wait and deliberately not subject
 * to {@linkcode mightSleep}.
 */
function stateLock(s: SharedState): void {
  lockWord(s.region, H_LOCK);
}

function stateUnlock(s: SharedState): void {
  unlockWord(s.region, H_LOCK);
}

function readName(s: SharedState, id: number): string {
  const off = id * NAME_SLOT;
  const len = s.names[off] ?? 0;
  // Copy out of shared memory: TextDecoder does not accept shared views.
  return decoder.decode(s.names.slice(off + 1, off + 1 + len));
}

/** The id of class `name` in the current shared state, registering it if new; -1 if full. */
function classId(name: string): number {
  const cached = idCache.get(name);
  if (cached !== undefined) return cached;
  const s = shared;
  const bytes = encoder.encode(name);
  let id = -1;
  stateLock(s);
  try {
    const count = Atomics.load(s.header, H_COUNT);
    for (let i = 0; i < count; i++) {
      const off = i * NAME_SLOT;
      if (s.names[off] !== bytes.length) continue;
      let same = true;
      for (let j = 0; j < bytes.length; j++) {
        if (s.names[off + 1 + j] !== bytes[j]) {
          same = false;
          break;
        }
      }
      if (same) {
        id = i;
        break;
      }
    }
    if (id < 0 && count < LOCKDEP_MAX_CLASSES) {
      const off = count * NAME_SLOT;
      s.names[off] = bytes.length;
      s.names.set(bytes, off + 1);
      id = count;
      Atomics.store(s.header, H_COUNT, count + 1);
    }
  } finally {
    stateUnlock(s);
  }
  if (id < 0 && !overflowWarned) {
    overflowWarned = true;
    process.emitWarning(
      `lockdep: more than ${LOCKDEP_MAX_CLASSES} lock classes; "${name}" and later classes are not checked`,
    );
  }
  idCache.set(name, id);
  if (id >= 0) nameCache[id] = name;
  return id;
}

function className(id: number): string {
  let n = nameCache[id];
  if (n === undefined) {
    n = readName(shared, id);
    nameCache[id] = n;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Lock classes

/**
 * A lock class: the unit lockdep reasons about (the kernel's lock_class_key). All locks that play
 * the same role share one class. Two `LockClass` objects with the same name are the same class,
 * in every thread attached to the same shared state.
 *
 * The id is assigned lazily on first use, so creating classes at module load costs nothing when
 * checking is off.
 *
 * @throws {DmaBufError} `EINVAL` if `name` is empty or longer than {@linkcode LOCKDEP_MAX_NAME_BYTES} UTF-8 bytes.
 * @example
 * ```ts
 * const timelineLock = new LockClass('timeline.lock');
 * lockAcquire(timelineLock);
 * try { ... } finally { lockRelease(timelineLock); }
 * ```
 */
export class LockClass {
  /** The class name; also the key that makes classes equal across threads. */
  readonly name: string;
  /** Holding a lock of this class is atomic context (like a kernel spinlock): no blocking waits. */
  readonly atomic: boolean;
  #id = -1;
  #epoch = -1;

  constructor(name: string, opts?: { atomic?: boolean }) {
    const bytes = encoder.encode(name).length;
    if (bytes === 0 || bytes > LOCKDEP_MAX_NAME_BYTES) {
      throw new DmaBufError(
        'EINVAL',
        `lock class name must be 1..${LOCKDEP_MAX_NAME_BYTES} UTF-8 bytes, got ${bytes}`,
      );
    }
    this.name = name;
    this.atomic = opts?.atomic === true;
  }

  /**
   * The class id, the same in every thread sharing the state; -1 when the class table is full
   * (the class is then not checked). Registers the class on first read.
   */
  get id(): number {
    if (this.#epoch !== stateEpoch) {
      this.#id = classId(this.name);
      this.#epoch = stateEpoch;
    }
    return this.#id;
  }
}

/**
 * The pseudo lock class standing for every fence: read-held by signalling sections, write-taken
 * by every fence wait.
 *
 * @example
 * ```ts
 * lockAcquire(dmaFenceMap, { read: true }); // what dmaFenceBeginSignalling() does
 * ```
 */
export const dmaFenceMap: LockClass = new LockClass('dma_fence_map');

// ---------------------------------------------------------------------------------------------
// Per-thread state

interface Held {
  cls: LockClass;
  mode: Mode;
}

function debugDefault(): boolean {
  const v = typeof process === 'undefined' ? undefined : process.env.DMABUF_DEBUG;
  if (!v) return false;
  return v.split(',').some((w) => {
    const t = w.trim();
    return t === '1' || t === 'lockdep';
  });
}

let enabled = debugDefault();
let reportMode: LockdepMode = 'throw';
let held: Held[] = [];
let noSleep: string[] = [];
let reports: LockdepReport[] = [];

function sameClass(a: LockClass, b: LockClass): boolean {
  if (a === b) return true;
  const id = a.id;
  return id >= 0 && id === b.id;
}

function findHeld(cls: LockClass): number {
  for (let i = held.length - 1; i >= 0; i--) {
    const h = held[i];
    if (h !== undefined && sameClass(h.cls, cls)) return i;
  }
  return -1;
}

function heldNames(): string[] {
  return held.map((h) => h.cls.name);
}

function atomicHolder(): Held | undefined {
  for (let i = held.length - 1; i >= 0; i--) {
    const h = held[i];
    if (h?.cls.atomic) return h;
  }
  return undefined;
}

function report(kind: LockdepReport['kind'], message: string, locks: string[]): void {
  if (reportMode === 'throw') {
    throw new DmaBufError(kind === 'unbalanced' ? 'EINVAL' : 'EDEADLK', message);
  }
  reports.push({ kind, message, locks, thread: currentThreadId });
}

// ---------------------------------------------------------------------------------------------
// Dependency graph

interface Edge {
  from: number;
  fromMode: Mode;
  to: number;
  toMode: Mode;
}

const MODES: readonly Mode[] = [WRITE, READ, RECURSIVE];

/**
 * Looks for a strong path start -> ... -> target in the shared graph (caller holds the lock).
 * `startViaRecursive`: `start` is entered as a recursive reader by the edge that closes the
 * cycle; `targetHeldShared`: `target` is held shared by that edge. A path is strong when no lock
 * on it is entered as a recursive reader and then left while held shared.
 */
function findStrongPath(
  s: SharedState,
  start: number,
  startViaRecursive: boolean,
  target: number,
  targetHeldShared: boolean,
): Edge[] | null {
  const n = Math.min(Atomics.load(s.header, H_COUNT), LOCKDEP_MAX_CLASSES);
  // State = node * 2 + (entered as recursive reader ? 1 : 0).
  const seen = new Uint8Array(n * 2);
  const parent = new Int32Array(n * 2).fill(-1);
  const via = new Int8Array(n * 2); // fromMode * 3 + toMode of the edge used to reach the state
  const queue: number[] = [];
  const first = start * 2 + (startViaRecursive ? 1 : 0);
  seen[first] = 1;
  queue.push(first);
  for (let qi = 0; qi < queue.length; qi++) {
    const st = queue[qi] as number;
    const u = st >> 1;
    const enteredRecursive = (st & 1) === 1;
    const row = u * LOCKDEP_MAX_CLASSES;
    for (let v = 0; v < n; v++) {
      const mask = s.edges[row + v] ?? 0;
      if (mask === 0) continue;
      for (const p of MODES) {
        if (enteredRecursive && p !== WRITE) continue; // weak junction at u
        for (const q of MODES) {
          if ((mask & (1 << (p * 3 + q))) === 0) continue;
          const next = v * 2 + (q === RECURSIVE ? 1 : 0);
          if (seen[next]) continue;
          seen[next] = 1;
          parent[next] = st;
          via[next] = p * 3 + q;
          if (v === target) {
            if (q === RECURSIVE && targetHeldShared) continue; // weak junction at target
            const path: Edge[] = [];
            for (let cur = next; cur !== first; ) {
              const prev = parent[cur] as number;
              const code = via[cur] as number;
              path.push({
                from: prev >> 1,
                fromMode: Math.floor(code / 3) as Mode,
                to: cur >> 1,
                toMode: (code % 3) as Mode,
              });
              cur = prev;
            }
            return path.reverse();
          }
          queue.push(next);
        }
      }
    }
  }
  return null;
}

/** Records `from` (held in fromMode) -> `to` (acquired in toMode); returns a closed cycle if any. */
function addEdge(from: number, fromMode: Mode, to: number, toMode: Mode): Edge[] | null {
  const s = shared;
  const idx = from * LOCKDEP_MAX_CLASSES + to;
  const bit = 1 << (fromMode * 3 + toMode);
  if ((Atomics.load(s.edges, idx) & bit) !== 0) return null;
  stateLock(s);
  try {
    if ((Atomics.load(s.edges, idx) & bit) !== 0) return null;
    const path = findStrongPath(s, to, toMode === RECURSIVE, from, fromMode !== WRITE);
    if (path) return [{ from, fromMode, to, toMode }, ...path];
    // A cycle-closing edge is not inserted: the graph stays free of strong cycles.
    Atomics.or(s.edges, idx, bit);
    return null;
  } finally {
    stateUnlock(s);
  }
}

function modeNote(id: number, mode: Mode): string {
  const fenceMap = dmaFenceMap.id;
  if (id === fenceMap && id >= 0) {
    if (mode === WRITE) return 'write, wait';
    return mode === READ ? 'read, signalling section' : 'recursive read, signalling section';
  }
  if (mode === WRITE) return '';
  return mode === READ ? 'read' : 'recursive read';
}

function label(id: number, note: string): string {
  const name = className(id);
  return note ? `${name} (${note})` : name;
}

/** Formats a cycle, starting at dma_fence_map when it is part of it. */
function describeCycle(cycle: Edge[]): { text: string; locks: string[] } {
  const fenceMap = dmaFenceMap.id;
  let start = cycle.findIndex((e) => e.from === fenceMap && e.fromMode !== WRITE);
  if (start < 0) start = cycle.findIndex((e) => e.from === fenceMap);
  if (start < 0) start = 0;
  const edges = [...cycle.slice(start), ...cycle.slice(0, start)];
  const head = edges[0] as Edge;
  const parts = [label(head.from, modeNote(head.from, head.fromMode))];
  const locks = [className(head.from)];
  for (let i = 0; i < edges.length; i++) {
    const e = edges[i] as Edge;
    const out = edges[i + 1];
    if (out === undefined) {
      parts.push(label(e.to, modeNote(e.to, e.toMode)));
      break;
    }
    const inNote = modeNote(e.to, e.toMode);
    const outNote = modeNote(e.to, out.fromMode);
    parts.push(
      label(
        e.to,
        inNote === outNote ? inNote : `acquired ${inNote || 'write'}, held ${outNote || 'write'}`,
      ),
    );
    locks.push(className(e.to));
  }
  return { text: parts.join(' -> '), locks };
}

function modeWord(mode: Mode): string {
  return mode === WRITE ? 'write' : mode === READ ? 'read' : 'recursive read';
}

/**
 * All checks of an acquisition of `cls` in `mode` by this thread; does not record it as held.
 * A violation throws in mode 'throw' and is recorded (at most one per call) in mode 'record'.
 */
function checkAcquire(cls: LockClass, mode: Mode, trylock: boolean): void {
  if (trylock) return; // a trylock never blocks, so nothing held can depend on it
  const id = cls.id;
  if (id < 0) return;
  for (const h of held) {
    if (!sameClass(h.cls, cls)) continue;
    if (mode === RECURSIVE && h.mode !== WRITE) continue; // read-after-read recursion is fine
    report(
      'deadlock',
      `possible recursive locking: ${cls.name} acquired (${modeWord(mode)}) while this thread already holds it (${modeWord(h.mode)})`,
      [cls.name],
    );
    return;
  }
  for (const h of held) {
    const from = h.cls.id;
    if (from < 0 || from === id) continue;
    const cycle = addEdge(from, h.mode, id, mode);
    if (cycle) {
      const { text, locks } = describeCycle(cycle);
      report(
        'deadlock',
        `possible deadlock: ${text} (closed in thread ${currentThreadId} by acquiring ${cls.name} while holding ${h.cls.name})`,
        locks,
      );
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Public API

/**
 * Turns checking on or off for this thread and selects how violations are reported. Turning it
 * on from off forgets this thread's held locks and no-sleep regions (they were not tracked).
 *
 * @param on whether to check.
 * @param mode `'throw'` (default): throw a `DmaBufError`; `'record'`: append to {@linkcode lockdepReports}.
 * @throws {DmaBufError} `EINVAL` for an unknown mode.
 * @example
 * ```ts
 * lockdepEnable(true, 'record');
 * ```
 */
export function lockdepEnable(on: boolean, mode: LockdepMode = 'throw'): void {
  if (mode !== 'throw' && mode !== 'record') {
    throw new DmaBufError('EINVAL', `lockdep: unknown mode ${String(mode)}`);
  }
  if (on && !enabled) {
    held = [];
    noSleep = [];
  }
  enabled = on;
  reportMode = mode;
}

/**
 * Whether checking is on in this thread.
 *
 * @throws never
 * @example
 * ```ts
 * if (lockdepEnabled()) console.log(lockdepReports());
 * ```
 */
export function lockdepEnabled(): boolean {
  return enabled;
}

/**
 * The reports recorded by this thread in mode `'record'` (a copy).
 *
 * @throws never
 * @example
 * ```ts
 * for (const r of lockdepReports()) console.error(r.kind, r.message);
 * ```
 */
export function lockdepReports(): LockdepReport[] {
  return reports.slice();
}

/**
 * Forgets this thread's held locks, sections, no-sleep regions and reports, and clears the
 * shared dependency graph (for every thread). Class ids are kept. Meant for tests.
 *
 * @throws never
 * @example
 * ```ts
 * beforeEach(() => lockdepReset());
 * ```
 */
export function lockdepReset(): void {
  held = [];
  noSleep = [];
  reports = [];
  const s = shared;
  stateLock(s);
  try {
    s.edges.fill(0);
  } finally {
    stateUnlock(s);
  }
}

/**
 * The shared state buffer of this thread, to hand to a worker that did not inherit it.
 *
 * @throws never
 * @example
 * ```ts
 * worker.postMessage({ lockdep: lockdepShareState() });
 * ```
 */
export function lockdepShareState(): SharedArrayBuffer {
  return shared.sab;
}

/**
 * Makes this thread use `sab` (from {@linkcode lockdepShareState} in another thread) as its
 * shared state, and republishes it for workers this thread creates later. Class ids are
 * recomputed against the new name table; the graph recorded in the old state is not carried over.
 *
 * @throws {DmaBufError} `EINVAL` if `sab` is not a lockdep state buffer.
 * @example
 * ```ts
 * parentPort.once('message', (m) => lockdepAttachState(m.lockdep));
 * ```
 */
export function lockdepAttachState(sab: SharedArrayBuffer): void {
  const s = wrapState(sab);
  if (s.sab === shared.sab) return;
  shared = s;
  stateEpoch++;
  idCache = new Map();
  nameCache = [];
  setEnvironmentData(LOCKDEP_ENV_KEY, sab);
}

/**
 * Counters of the shared state: registered classes and recorded dependency edges.
 *
 * @throws never
 * @example
 * ```ts
 * const { classes, edges } = lockdepStats();
 * ```
 */
export function lockdepStats(): { classes: number; edges: number } {
  const s = shared;
  const classes = Atomics.load(s.header, H_COUNT);
  let edges = 0;
  for (let i = 0; i < s.edges.length; i++) if (Atomics.load(s.edges, i) !== 0) edges++;
  return { classes, edges };
}

/**
 * Names of the lock classes this thread holds, oldest first (empty when checking is off).
 *
 * @throws never
 * @example
 * ```ts
 * console.log(lockdepHeldLocks()); // ['dma_fence_map', 'mutexA']
 * ```
 */
export function lockdepHeldLocks(): string[] {
  if (!enabled) return [];
  return heldNames();
}

/**
 * Annotates that this thread acquires a lock of class `cls`: records dependencies from every held
 * lock and checks them for cycles. Call it right before the real acquisition blocks (for a
 * trylock: after it succeeded). In mode 'throw' a violating acquisition is not recorded.
 *
 * @param opts.read `true`: shared, non-recursive reader; `'recursive'`: recursive reader.
 * @param opts.trylock the acquisition cannot block, so no dependency on held locks is recorded.
 * @throws {DmaBufError} `EDEADLK` (mode 'throw') when the acquisition closes a lock-order cycle or
 * recursively takes a held class.
 * @example
 * ```ts
 * const cls = new LockClass('resv.lock');
 * lockAcquire(cls);
 * // ... critical section ...
 * lockRelease(cls);
 * ```
 */
export function lockAcquire(
  cls: LockClass,
  opts?: { read?: boolean | 'recursive'; trylock?: boolean },
): void {
  if (!enabled) return;
  const mode: Mode = opts?.read === 'recursive' ? RECURSIVE : opts?.read ? READ : WRITE;
  checkAcquire(cls, mode, opts?.trylock === true);
  held.push({ cls, mode });
}

/**
 * Annotates that this thread releases its most recent hold of class `cls` (any order allowed).
 *
 * @throws {DmaBufError} `EINVAL` (mode 'throw') if this thread does not hold `cls`.
 * @example
 * ```ts
 * lockRelease(cls);
 * ```
 */
export function lockRelease(cls: LockClass): void {
  if (!enabled) return;
  const i = findHeld(cls);
  if (i < 0) {
    report('unbalanced', `releasing ${cls.name}, which this thread does not hold`, [cls.name]);
    return;
  }
  held.splice(i, 1);
}

/**
 * Opens a fence signalling critical path. Call it as soon as a fence becomes visible to other
 * threads, and keep it open until the fence is signalled. Returns a cookie for
 * {@linkcode dmaFenceEndSignalling}: `true` means nothing was taken (checking off, nested
 * inside another section, or in a no-sleep/atomic context), `false` means the section's read
 * hold on {@linkcode dmaFenceMap} was taken.
 *
 * @throws {DmaBufError} `EDEADLK` (mode 'throw') when entering the section closes a lock-order cycle.
 * @example
 * ```ts
 * const cookie = dmaFenceBeginSignalling();
 * try {
 *   fence.signal();
 * } finally {
 *   dmaFenceEndSignalling(cookie);
 * }
 * ```
 */
export function dmaFenceBeginSignalling(): boolean {
  if (!enabled) return true;
  if (noSleep.length > 0 || atomicHolder() !== undefined) return true;
  if (findHeld(dmaFenceMap) >= 0) return true;
  checkAcquire(dmaFenceMap, READ, false);
  held.push({ cls: dmaFenceMap, mode: READ });
  return false;
}

/**
 * Closes a section opened by {@linkcode dmaFenceBeginSignalling}; a `true` cookie is a no-op.
 *
 * @throws {DmaBufError} `EINVAL` (mode 'throw') for a `false` cookie without an open section.
 * @example
 * ```ts
 * dmaFenceEndSignalling(cookie);
 * ```
 */
export function dmaFenceEndSignalling(cookie: boolean): void {
  if (!enabled || cookie) return;
  for (let i = held.length - 1; i >= 0; i--) {
    const h = held[i];
    if (h !== undefined && h.mode !== WRITE && sameClass(h.cls, dmaFenceMap)) {
      held.splice(i, 1);
      return;
    }
  }
  report('unbalanced', 'dma_fence_end_signalling without a matching dma_fence_begin_signalling', [
    dmaFenceMap.name,
  ]);
}

/**
 * Annotates a wait on a fence. Every wait, blocking or asynchronous, calls this before waiting:
 * it takes and drops {@linkcode dmaFenceMap} as a writer, recording that every lock held now is
 * held while waiting for some signalling path. Inside a signalling section the section's read
 * hold is set aside for the check, so the wait itself is allowed; a lock acquired inside the
 * section and still held here is reported.
 *
 * @throws {DmaBufError} `EDEADLK` (mode 'throw') when a held lock is also needed for signalling.
 * @example
 * ```ts
 * dmaFenceMightWait();
 * await fence.wait();
 * ```
 */
export function dmaFenceMightWait(): void {
  if (!enabled) return;
  const i = findHeld(dmaFenceMap);
  const saved = i >= 0 ? held.splice(i, 1)[0] : undefined;
  try {
    checkAcquire(dmaFenceMap, WRITE, false);
  } finally {
    if (saved !== undefined) held.splice(i, 0, saved);
  }
}

/**
 * Annotates a blocking wait (`Atomics.wait` and anything built on it). Reported when this thread
 * is in a no-sleep region ({@linkcode withNoSleep}) or holds an `atomic` lock class. Waiting
 * inside a signalling section is allowed here: {@linkcode dmaFenceMightWait} covers that.
 *
 * @param what what is about to block, for the report.
 * @throws {DmaBufError} `EDEADLK` (mode 'throw') in a context that must not block.
 * @example
 * ```ts
 * mightSleep('fence wait');
 * Atomics.wait(word, 0, expected);
 * ```
 */
export function mightSleep(what: string): void {
  if (!enabled) return;
  const why =
    noSleep.length > 0
      ? noSleep[noSleep.length - 1]
      : atomicHolder() !== undefined
        ? `holding atomic lock ${atomicHolder()?.cls.name}`
        : undefined;
  if (why === undefined) return;
  const locks = heldNames();
  report(
    'might-sleep',
    `blocking wait (${what}) in a context that must not sleep: ${why}${locks.length ? `; held: ${locks.join(', ')}` : ''}`,
    locks,
  );
}

/**
 * Whether this thread is inside a fence signalling section (always false when checking is off).
 *
 * @throws never
 * @example
 * ```ts
 * if (inSignallingSection()) console.log('on a critical path');
 * ```
 */
export function inSignallingSection(): boolean {
  if (!enabled) return false;
  for (const h of held) if (h.mode !== WRITE && sameClass(h.cls, dmaFenceMap)) return true;
  return false;
}

/**
 * Runs `fn` as a region where blocking is forbidden (e.g. fence callbacks): a
 * {@linkcode mightSleep} inside it is reported. The region covers the synchronous part of `fn`
 * only; a returned promise is passed through unchanged.
 *
 * @param why what the region is, for reports (e.g. `'fence callback'`).
 * @throws whatever `fn` throws.
 * @example
 * ```ts
 * withNoSleep('fence callback', () => cb(fence));
 * ```
 */
export function withNoSleep<T>(why: string, fn: () => T): T {
  if (!enabled) return fn();
  const depth = noSleep.length;
  noSleep.push(why);
  try {
    return fn();
  } finally {
    if (noSleep.length > depth) noSleep.length = depth;
  }
}
