/**
 * Shared-memory machinery of the fence containers: `dma_fence_array` and `dma_fence_chain`
 * (drivers/dma-buf/dma-fence-array.c, dma-fence-chain.c), plus the leaf walk used by unwrap.
 *
 * Everything a container does after creation (arming its members, completing, polling,
 * forwarding deadlines, releasing its members, collecting signalled chain links) works on the
 * shared records only, so it can run in any thread: in a waiter, in whichever thread signals a
 * member (dependents), or in whichever thread drops the last reference. Both container kinds
 * and both dependents are registered here, in one fixed order, as soon as any container module
 * is loaded: dependent ids are stored in shared memory and must mean the same in every thread.
 * Every thread that signals a member of a container, or touches a container at all, must
 * therefore have loaded this module (importing any of the container modules does that).
 *
 * The handle classes live in their own modules and register themselves with
 * {@linkcode setContainerClass}; a thread that loaded only one of them wraps the other kind as a
 * plain `DmaFence` handle, which behaves the same for waiting, polling and callbacks.
 *
 * @module
 */
import {
  ADOPT,
  addDependent,
  DependentId,
  DMA_FENCE_FLAG,
  DmaFence,
  F,
  FENCE_BITS,
  FenceKindId,
  initFenceRecord,
  isSignaledSlot,
  putFence,
  registerDependent,
  registerFenceKind,
  setDeadlineSlot,
  signalSlot,
} from './dma-fence.js';
import { type Domain, R_REF, RecordType, refCount } from './substrate/domain.js';
import { DmaBufError } from './substrate/errno.js';

// ---- record layouts ---------------------------------------------------------------------------

/** Array record, words 18..23. */
const A_NUM = F.KIND0; // number of members
const A_PENDING = F.KIND0 + 1; // num_pending (1 for signal-on-any, else the member count)
const A_ANY = F.KIND0 + 2; // 1 when created with signalOnAny
const A_EXT = F.KIND0 + 3; // first EXT record with more members, as slot + 1 (0: none)
const A_INLINE = F.KIND0 + 4; // members 0 and 1 (words 22, 23), as slots
const INLINE_MEMBERS = 2;
/** EXT record: word 3 links to the next one (slot + 1), words 4..23 hold member slots. */
const X_NEXT = 3;
const X_FIRST = 4;
const X_MEMBERS = 20;

/** Chain record: 64-bit word 9 (words 18, 19) is `prev` packed as (slot + 1) << 32 | gen. */
const C_PREV64 = F.KIND0 >> 1;
const C_FENCE = F.KIND0 + 2; // contained fence slot
const C_FENCE_GEN = F.KIND0 + 3; // and its generation
/** 64-bit word 11 (words 22, 23): prev_seqno. */
const C_PREV_SEQNO64 = (F.KIND0 + 4) >> 1;

/** The array's "no error yet" marker in F.ERROR (the kernel's PENDING_ERROR). */
const PENDING_ERROR = 1;

const ENABLE = FENCE_BITS.ENABLE;
const TIMESTAMP = 1 << DMA_FENCE_FLAG.TIMESTAMP_BIT;
const SEQNO64 = 1 << DMA_FENCE_FLAG.SEQNO64_BIT;

// ---- kinds ------------------------------------------------------------------------------------

/** The kind of the fence record `slot` (FenceKindId). */
export function kindOf(d: Domain, slot: number): number {
  const b = d.base(slot);
  const flags = Atomics.load(d.i32, b + F.FLAGS);
  return (flags & FENCE_BITS.KIND_MASK) >> FENCE_BITS.KIND_SHIFT;
}

/** `dma_fence_is_array` on a record. */
export function isArraySlot(d: Domain, slot: number): boolean {
  return kindOf(d, slot) === FenceKindId.ARRAY;
}

/** `dma_fence_is_chain` on a record. */
export function isChainSlot(d: Domain, slot: number): boolean {
  return kindOf(d, slot) === FenceKindId.CHAIN;
}

/**
 * True when `fence` is a container, an array or a chain (`dma_fence_is_container`).
 *
 * @throws {DmaBufError} EBADF for a disposed or stale handle.
 */
export function isContainer(fence: DmaFence): boolean {
  const d = fence._check();
  const k = kindOf(d, fence._slot);
  return k === FenceKindId.ARRAY || k === FenceKindId.CHAIN;
}

type FenceCtor = new (adopt: typeof ADOPT, slot: number, gen: number, owned: boolean) => DmaFence;
const classes: (FenceCtor | undefined)[] = [];

/** @internal Handle class modules register themselves here (see the module comment). */
export function setContainerClass(kind: number, ctor: FenceCtor): void {
  classes[kind] = ctor;
}

function wrapAs(kind: number): (slot: number, gen: number, owned: boolean) => DmaFence {
  return (slot, gen, owned) => {
    const C = classes[kind] ?? DmaFence;
    return new C(ADOPT, slot, gen, owned);
  };
}

/**
 * Makes this thread's views cover record `slot` and returns it. A slot read from shared memory
 * may lie past this thread's views (another thread grew the region); it must be refreshed before
 * it reaches code written `Atomics.op(d.i32, d.base(s) + k)`, which evaluates the stale view
 * before `base()` refreshes it (several such places remain in dma-fence.ts).
 */
export function fresh(d: Domain, slot: number): number {
  d.base(slot);
  return slot;
}

/** Generation of a record we hold a reference on. */
function genOf(d: Domain, slot: number): number {
  return d.gen(slot);
}

/** Stored error of a record (raw: an array may hold its positive pending marker). */
function errorOf(d: Domain, slot: number): number {
  const b = d.base(slot);
  return Atomics.load(d.i32, b + F.ERROR);
}

/** Polls a record we hold a reference on (`dma_fence_is_signaled`). */
function polled(d: Domain, slot: number): boolean {
  return isSignaledSlot(d, slot, genOf(d, slot));
}

/** Context of a record, as the unsigned 64-bit value. */
export function contextOf(d: Domain, slot: number): bigint {
  const b64 = d.base64(slot);
  return BigInt.asUintN(64, Atomics.load(d.i64, b64 + F.CONTEXT64));
}

/** Seqno of a record, as the unsigned 64-bit value. */
export function seqnoOf(d: Domain, slot: number): bigint {
  const b64 = d.base64(slot);
  return BigInt.asUintN(64, Atomics.load(d.i64, b64 + F.SEQNO64));
}

/** Whether the record orders seqnos on 64 bits. */
export function seqno64Of(d: Domain, slot: number): boolean {
  const b = d.base(slot);
  return (Atomics.load(d.i32, b + F.FLAGS) & SEQNO64) !== 0;
}

/** `dma_fence_timestamp` of a signalled record: waits for the timestamp to be published. */
export function timestampOf(d: Domain, slot: number): bigint {
  const b = d.base(slot);
  while ((Atomics.load(d.i32, b + F.FLAGS) & TIMESTAMP) === 0) {
    /* the signaller is between setting the bits; spin as the kernel does */
  }
  return Atomics.load(d.i64, (b >> 1) + F.TIMESTAMP64);
}

/** Runs a dependent's body; a throw must not escape into the core's deferred queue. */
function guarded(fn: () => void): void {
  try {
    fn();
  } catch (e) {
    queueMicrotask(() => {
      throw e;
    });
  }
}

// ---- dma_fence_array ------------------------------------------------------------------------

/** Number of members of array record `slot`. */
export function arrayNum(d: Domain, slot: number): number {
  const b = d.base(slot);
  return Atomics.load(d.i32, b + A_NUM);
}

/** Whether array record `slot` signals on any member. */
export function arrayAny(d: Domain, slot: number): boolean {
  const b = d.base(slot);
  return Atomics.load(d.i32, b + A_ANY) !== 0;
}

/**
 * The member slots of array record `slot`, in order (immutable after creation). Each is
 * `fresh`: this thread's views cover it.
 */
export function arrayMembers(d: Domain, slot: number): number[] {
  const b = d.base(slot);
  const n = Atomics.load(d.i32, b + A_NUM);
  const out: number[] = [];
  for (let i = 0; i < n && i < INLINE_MEMBERS; i++) out.push(Atomics.load(d.i32, b + A_INLINE + i));
  let ext = Atomics.load(d.i32, b + A_EXT);
  while (out.length < n && ext !== 0) {
    const xb = d.base(ext - 1);
    const i32 = d.i32;
    for (let k = 0; k < X_MEMBERS && out.length < n; k++) {
      out.push(Atomics.load(i32, xb + X_FIRST + k));
    }
    ext = Atomics.load(i32, xb + X_NEXT);
  }
  for (const m of out) fresh(d, m);
  return out;
}

/** Member `i` of array record `slot` (no reference taken), or -1 when out of range. */
export function arrayMember(d: Domain, slot: number, i: number): number {
  const b = d.base(slot);
  const n = Atomics.load(d.i32, b + A_NUM);
  if (!Number.isInteger(i) || i < 0 || i >= n) return -1;
  if (i < INLINE_MEMBERS) return fresh(d, Atomics.load(d.i32, b + A_INLINE + i));
  let j = i - INLINE_MEMBERS;
  let ext = Atomics.load(d.i32, b + A_EXT);
  for (; j >= X_MEMBERS; j -= X_MEMBERS) {
    const xb = d.base(ext - 1);
    ext = Atomics.load(d.i32, xb + X_NEXT);
  }
  const xb = d.base(ext - 1);
  return fresh(d, Atomics.load(d.i32, xb + X_FIRST + j));
}

/**
 * Creates an array record over `members` (`dma_fence_array_create`). With `adopt` the array
 * takes over one reference per member from the caller (the kernel's ownership transfer);
 * otherwise it takes its own. The caller has validated the members.
 */
export function arrayCreateSlot(
  d: Domain,
  members: readonly number[],
  context: bigint,
  seqno: bigint,
  signalOnAny: boolean,
  adopt: boolean,
): number {
  const n = members.length;
  const slot = initFenceRecord(
    d,
    FenceKindId.ARRAY,
    context,
    seqno,
    'dma_fence_array',
    'unbound',
    false,
  );
  const exts: number[] = [];
  try {
    for (let left = n - INLINE_MEMBERS; left > 0; left -= X_MEMBERS) {
      exts.push(d.alloc(RecordType.EXT));
    }
  } catch (e) {
    for (const x of exts) d.free(x);
    d.free(slot);
    throw e;
  }
  // Allocation may have grown the region: take the views only now (nothing allocates after
  // this point, so they stay valid for our records). The record is private until published.
  const b = d.base(slot);
  const i32 = d.i32;
  for (let i = 0; i < n && i < INLINE_MEMBERS; i++)
    Atomics.store(i32, b + A_INLINE + i, members[i]!);
  for (let k = 0; k < exts.length; k++) {
    const xb = d.base(exts[k]!);
    const next = exts[k + 1];
    Atomics.store(i32, xb + X_NEXT, next === undefined ? 0 : next + 1);
    for (let j = 0; j < X_MEMBERS; j++) {
      const m = members[INLINE_MEMBERS + k * X_MEMBERS + j];
      if (m === undefined) break;
      Atomics.store(i32, xb + X_FIRST + j, m);
    }
  }
  Atomics.store(i32, b + A_NUM, n);
  Atomics.store(i32, b + A_PENDING, signalOnAny ? 1 : n);
  Atomics.store(i32, b + A_ANY, signalOnAny ? 1 : 0);
  Atomics.store(i32, b + A_EXT, exts.length > 0 ? exts[0]! + 1 : 0);
  Atomics.store(i32, b + F.ERROR, PENDING_ERROR);
  if (!adopt) for (const m of members) d.get(m);
  return slot;
}

/** The first member error wins, and only while the array is still pending. */
function arraySetPendingError(d: Domain, slot: number, error: number): void {
  if (error === 0) return;
  const b = d.base(slot);
  Atomics.compareExchange(d.i32, b + F.ERROR, PENDING_ERROR, error);
}

/** Completion: a marker still in place becomes "no error". */
function arrayClearPendingError(d: Domain, slot: number): void {
  const b = d.base(slot);
  Atomics.compareExchange(d.i32, b + F.ERROR, PENDING_ERROR, 0);
}

/** Decrements num_pending; true when this took it to zero. */
function arrayDecPending(d: Domain, slot: number): boolean {
  const b = d.base(slot);
  return Atomics.sub(d.i32, b + A_PENDING, 1) === 1;
}

/**
 * A member signalled (`dma_fence_array_cb_func` followed by its irq_work): runs in the thread
 * that signalled the member, once that signal is complete. Holds an array reference.
 */
const DEP_ARRAY = registerDependent(DependentId.ARRAY, (d, target, _targetGen, _arg, source) => {
  fresh(d, target);
  fresh(d, source);
  guarded(() => {
    try {
      arraySetPendingError(d, target, errorOf(d, source));
      if (arrayDecPending(d, target)) {
        arrayClearPendingError(d, target);
        signalSlot(d, target, undefined);
      }
    } finally {
      putFence(target);
    }
  });
});

function arrayEnable(d: Domain, slot: number, gen: number): boolean {
  const members = arrayMembers(d, slot);
  for (let i = 0; i < members.length; i++) {
    const m = members[i]!;
    // The dependent's own reference: the array must outlive every armed member.
    d.get(slot);
    if (!addDependent(d, m, DEP_ARRAY, slot, gen, i)) {
      arraySetPendingError(d, slot, errorOf(d, m));
      putFence(slot);
      if (arrayDecPending(d, slot)) {
        // Done already: the core signals the array; later members get no dependent.
        arrayClearPendingError(d, slot);
        return false;
      }
    }
  }
  return true;
}

function arraySignaled(d: Domain, slot: number): boolean {
  const b = d.base(slot);
  // num_pending first, then the enable bit: enable sets the bit before it decrements, so a
  // decremented count is always read together with the bit.
  let pending = Atomics.load(d.i32, b + A_PENDING);
  if ((Atomics.load(d.i32, b + F.FLAGS) & ENABLE) !== 0) {
    if (pending > 0) return false;
  } else if (pending > 0) {
    // Not armed: poll members in order until `pending` of them have signalled.
    let error = 0;
    for (const m of arrayMembers(d, slot)) {
      if (!polled(d, m)) continue;
      if (error === 0) error = errorOf(d, m);
      if (--pending === 0) break;
    }
    if (pending > 0) return false;
    // Deviation (documented in dma-fence-array.ts): v6.17 drops member errors on this path;
    // we keep the first one in member order, as the later kernel fix does.
    arraySetPendingError(d, slot, error);
  }
  arrayClearPendingError(d, slot);
  return true;
}

function arrayRelease(d: Domain, slot: number): void {
  const members = arrayMembers(d, slot);
  const b = d.base(slot);
  let ext = Atomics.exchange(d.i32, b + A_EXT, 0);
  while (ext !== 0) {
    const xb = d.base(ext - 1);
    const next = Atomics.load(d.i32, xb + X_NEXT);
    d.free(ext - 1);
    ext = next;
  }
  for (const m of members) putFence(m);
}

function arraySetDeadline(d: Domain, slot: number, ns: bigint): void {
  for (const m of arrayMembers(d, slot)) setDeadlineSlot(d, m, genOf(d, m), ns);
}

// ---- dma_fence_chain --------------------------------------------------------------------------

/** Packs a (slot, gen) pair for the prev word; 0n is "no prev". */
export function packLink(slot: number, gen: number): bigint {
  return (BigInt(slot + 1) << 32n) | BigInt(gen >>> 0);
}

/** Slot of a packed link. */
export function linkSlot(v: bigint): number {
  return Number(v >> 32n) - 1;
}

function linkGen(v: bigint): number {
  return Number(v & 0xffffffffn);
}

function loadPrev(d: Domain, node: number): bigint {
  const b64 = d.base64(node);
  return Atomics.load(d.i64, b64 + C_PREV64);
}

/** The contained fence of chain record `slot` (no reference taken). */
export function chainFenceSlot(d: Domain, slot: number): number {
  const b = d.base(slot);
  return fresh(d, Atomics.load(d.i32, b + C_FENCE));
}

/**
 * A cheap completion test for a waiter on fence `slot`, with no walk and no reference
 * traffic: its own signalled bit, or, for a chain node, its contained fence signalled and its
 * predecessor (a chain node, which signals only after everything before it) signalled or gone.
 * False means "not known yet": the node's own bit will follow. Exact where it says true, as
 * `dma_fence_chain_signaled` is.
 */
export function signaledQuick(d: Domain, slot: number): boolean {
  const b = d.base(slot);
  const flags = Atomics.load(d.i32, b + F.FLAGS);
  if ((flags & FENCE_BITS.SIGNALED) !== 0) return true;
  if ((flags & FENCE_BITS.KIND_MASK) >> FENCE_BITS.KIND_SHIFT !== FenceKindId.CHAIN) return false;
  const f = Atomics.load(d.i32, b + C_FENCE);
  if ((Atomics.load(d.at32(f), d.base(f) + F.FLAGS) & FENCE_BITS.SIGNALED) === 0) return false;
  const link = Atomics.load(d.at64(slot), (b >> 1) + C_PREV64);
  if (link === 0n) return true;
  const p = linkSlot(link);
  const pb = d.base(p);
  if (Atomics.load(d.i32, pb + F.GEN) !== linkGen(link)) return false;
  return (Atomics.load(d.i32, pb + F.FLAGS) & FENCE_BITS.SIGNALED) !== 0;
}

/** `dma_fence_chain_contained`: the chain's fence, or the fence itself when not a chain. */
export function containedSlot(d: Domain, slot: number): number {
  return isChainSlot(d, slot) ? chainFenceSlot(d, slot) : slot;
}

/** prev_seqno of chain record `slot`. */
export function chainPrevSeqno(d: Domain, slot: number): bigint {
  const b64 = d.base64(slot);
  return BigInt.asUintN(64, Atomics.load(d.i64, b64 + C_PREV_SEQNO64));
}

/**
 * Initialises a chain record (`dma_fence_chain_init`): takes its own references on `prev`
 * (slot or -1) and `fence`. The caller has validated both and chosen context and seqno.
 */
export function chainCreateSlot(
  d: Domain,
  prev: number,
  fence: number,
  context: bigint,
  seqno: bigint,
  prevSeqno: bigint,
): number {
  const slot = initFenceRecord(
    d,
    FenceKindId.CHAIN,
    context,
    seqno,
    'dma_fence_chain',
    'unbound',
    true,
  );
  const prevLink = prev >= 0 ? packLink(prev, d.gen(prev)) : 0n;
  const fenceGen = d.gen(fence);
  if (prev >= 0) d.get(prev);
  d.get(fence);
  const b = d.base(slot);
  Atomics.store(d.i64, (b >> 1) + C_PREV64, prevLink);
  Atomics.store(d.i64, (b >> 1) + C_PREV_SEQNO64, BigInt.asIntN(64, prevSeqno));
  Atomics.store(d.i32, b + C_FENCE, fence);
  Atomics.store(d.i32, b + C_FENCE_GEN, fenceGen);
  return slot;
}

/**
 * A new reference to the prev of chain record `node` (which the caller holds), as a packed link,
 * or 0n (`dma_fence_chain_get_prev` / `dma_fence_get_rcu_safe`): get-unless-zero with generation
 * re-check, then make sure the word still names it; otherwise read it again.
 */
export function chainGetPrev(d: Domain, node: number): bigint {
  for (;;) {
    const v = loadPrev(d, node);
    if (v === 0n) return 0n;
    const s = linkSlot(v);
    if (d.tryGet(s, linkGen(v), RecordType.FENCE)) {
      if (loadPrev(d, node) === v) return v;
      putFence(s);
    }
    // The word moved on (a concurrent unlink or release) or is about to: read it again.
  }
}

/**
 * `dma_fence_chain_walk`: consumes the reference on `cur` and returns the first pending
 * predecessor with a new reference, or -1 (also when `cur` is not a chain). Signalled
 * predecessors found on the way are unlinked with a compare-exchange on `cur`'s prev word (the
 * garbage collection); the current node's own fence is not examined.
 */
export function chainWalkSlot(d: Domain, cur: number): number {
  if (!isChainSlot(d, cur)) {
    putFence(cur);
    return -1;
  }
  let prev = -1;
  for (;;) {
    const pv = chainGetPrev(d, cur);
    if (pv === 0n) break;
    const p = linkSlot(pv);
    let replacement = 0n;
    if (isChainSlot(d, p)) {
      if (!polled(d, chainFenceSlot(d, p))) {
        prev = p;
        break;
      }
      replacement = chainGetPrev(d, p);
    } else if (!polled(d, p)) {
      prev = p;
      break;
    }
    // The prev word owns one reference on whatever it names: on success ours on the
    // replacement moves into it and the word's old one is dropped; on failure someone else
    // changed the word first and we give ours back.
    const b64 = d.base64(cur);
    const old = Atomics.compareExchange(d.i64, b64 + C_PREV64, pv, replacement);
    if (old === pv) putFence(p);
    else if (replacement !== 0n) putFence(linkSlot(replacement));
    putFence(p);
  }
  putFence(cur);
  return prev;
}

/** One outstanding dependent per chain node: the contained fence it waits on signalled. */
const DEP_CHAIN = registerDependent(DependentId.CHAIN, (d, target, targetGen, _arg, source) => {
  fresh(d, target);
  fresh(d, source);
  guarded(() => {
    try {
      // The chain's irq_work: re-arm on the next pending fence, or complete.
      if (!chainArm(d, target, targetGen)) signalSlot(d, target, undefined);
    } finally {
      putFence(target);
      putFence(source);
    }
  });
});

/**
 * `dma_fence_chain_enable_signaling`: hangs the node's dependent on the first pending contained
 * fence along the walk from `head` (true), or finds none (false). An armed dependent holds a
 * head reference and one on the fence it hangs on.
 */
function chainArm(d: Domain, head: number, headGen: number): boolean {
  d.get(head); // the dependent's
  d.get(head); // the walk's
  let it = head;
  while (it >= 0) {
    const f = containedSlot(d, it);
    d.get(f);
    if (addDependent(d, f, DEP_CHAIN, head, headGen, 0)) {
      putFence(it);
      return true;
    }
    putFence(f);
    it = chainWalkSlot(d, it);
  }
  putFence(head);
  return false;
}

function chainSignaled(d: Domain, slot: number): boolean {
  d.get(slot);
  let it = slot;
  while (it >= 0) {
    if (!polled(d, containedSlot(d, it))) {
      putFence(it);
      return false;
    }
    it = chainWalkSlot(d, it);
  }
  return true;
}

function chainSetDeadline(d: Domain, slot: number, ns: bigint): void {
  d.get(slot);
  let it = slot;
  try {
    while (it >= 0) {
      const f = containedSlot(d, it);
      setDeadlineSlot(d, f, genOf(d, f), ns);
      const cur = it;
      it = -1;
      it = chainWalkSlot(d, cur);
    }
  } finally {
    if (it >= 0) putFence(it);
  }
}

/**
 * Releases a chain node without recursion: while the predecessor is a chain node held by us
 * alone, take over its prev link and drop it (its own release then finds no prev), so a long
 * chain goes away in a loop rather than one nested release per link.
 */
function chainRelease(d: Domain, slot: number): void {
  const fence = chainFenceSlot(d, slot);
  const b64 = d.base64(slot);
  let v = Atomics.exchange(d.i64, b64 + C_PREV64, 0n);
  while (v !== 0n) {
    const p = linkSlot(v);
    const pb = d.base(p);
    if (refCount(Atomics.load(d.i32, pb + R_REF)) > 1 || !isChainSlot(d, p)) break;
    v = Atomics.exchange(d.i64, (pb >> 1) + C_PREV64, 0n);
    putFence(p);
  }
  if (v !== 0n) putFence(linkSlot(v));
  putFence(fence);
}

// ---- unwrap -----------------------------------------------------------------------------------

/**
 * The leaves under `head` (`dma_fence_unwrap_for_each`), as slots without references: they stay
 * valid while the iteration holds its cursor (the caller must not keep them past the next step).
 * Takes its own reference on `head`; releases the cursor when finished or abandoned.
 */
export function* leafSlots(d: Domain, head: number): Generator<number, void, undefined> {
  d.get(head);
  let chain = head;
  try {
    while (chain >= 0) {
      const array = containedSlot(d, chain);
      if (isArraySlot(d, array)) {
        const members = arrayMembers(d, array);
        // An empty array ends the whole iteration (dma_fence_array_first gives NULL); arrays
        // cannot be empty here, but the rule is kept.
        if (members.length === 0) return;
        for (const m of members) yield m;
      } else {
        yield array;
      }
      const cur = chain;
      chain = -1;
      chain = chainWalkSlot(d, cur);
    }
  } finally {
    if (chain >= 0) putFence(chain);
  }
}

// ---- registration -------------------------------------------------------------------------------

registerFenceKind(FenceKindId.ARRAY, {
  wrap: wrapAs(FenceKindId.ARRAY),
  signaled: arraySignaled,
  enable: arrayEnable,
  release: arrayRelease,
  setDeadline: arraySetDeadline,
});

registerFenceKind(FenceKindId.CHAIN, {
  wrap: wrapAs(FenceKindId.CHAIN),
  signaled: chainSignaled,
  enable: chainArm,
  release: chainRelease,
  setDeadline: chainSetDeadline,
});

/** @internal Checks a bigint in [0, 2^bits). */
export function checkUint(v: unknown, bits: number, what: string): bigint {
  if (typeof v !== 'bigint' || v < 0n || v >= 1n << BigInt(bits)) {
    throw new DmaBufError('EINVAL', `${what} must be a bigint in [0, 2^${bits})`);
  }
  return v;
}

/** @internal Checks that `f` is a live fence handle; returns its domain. */
export function checkFence(f: unknown, what: string): Domain {
  if (!(f instanceof DmaFence)) throw new DmaBufError('EINVAL', `${what} must be a DmaFence`);
  return f._check();
}
