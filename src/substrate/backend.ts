/**
 * The memory and wait/wake primitive behind every shared object.
 *
 * All object code reaches shared memory through a {@linkcode SharedRegion}: typed views of one
 * growable region, plus `wait`/`waitAsync`/`notify` on one of its 32-bit words. This file is the
 * only place that knows the region is a `SharedArrayBuffer` shared between the threads of one
 * process and that waking uses `Atomics.wait`/`Atomics.notify`. A later backend can map a memfd
 * into several processes and wait with futex (cross-process.md) without touching object code:
 * it implements the same two interfaces.
 *
 * Regions grow in place up to a maximum fixed at creation (a growable SharedArrayBuffer here, a
 * reserved-then-committed mapping for a memfd), so an index into a region stays valid forever and
 * every thread sees growth without a message.
 *
 * @module
 */

/** Result of a wait on a shared word, as `Atomics.wait` reports it. */
export type WaitResult = 'ok' | 'not-equal' | 'timed-out';

/** A postable description of a region: enough for another thread to attach it. */
export interface RegionDescriptor {
  readonly backend: string;
  readonly buffer: SharedArrayBuffer;
}

/** One shared memory region with its wait/wake primitive. */
export interface SharedRegion {
  /**
   * 32-bit view of the region as it was at the last {@linkcode SharedRegion.refresh}. Views are
   * fixed-length on purpose: Atomics on length-tracking views of a growable buffer cost about
   * five times more in V8.
   */
  readonly i32: Int32Array;
  /** 64-bit view over the same bytes, refreshed with `i32`. */
  readonly i64: BigInt64Array;
  /** Re-creates the views if the region has grown (in any thread) since they were made. */
  refresh(): void;
  /** Current size in bytes. */
  readonly byteLength: number;
  /** Largest size the region can grow to. */
  readonly maxByteLength: number;
  /** Grows the region to at least `bytes` (never shrinks). Returns false if past the maximum. */
  grow(bytes: number): boolean;
  /** Sleeps while `i32[index] === expected`, at most `timeoutMs` (Infinity: no limit). */
  wait(index: number, expected: number, timeoutMs: number): WaitResult;
  /** Event-loop friendly wait; does NOT keep the loop alive by itself (see waiter.ts). */
  waitAsync(index: number, expected: number, timeoutMs: number): Promise<WaitResult> | WaitResult;
  /** Wakes up to `count` sleepers on `i32[index]`; returns how many were woken. */
  notify(index: number, count?: number): number;
  /** What another thread needs to attach this region. */
  descriptor(): RegionDescriptor;
}

/** A provider of shared regions (SharedArrayBuffer today; memfd + futex later). */
export interface SharedMemoryBackend {
  readonly name: string;
  createRegion(bytes: number, maxBytes: number): SharedRegion;
  attachRegion(desc: RegionDescriptor): SharedRegion;
}

class SabRegion implements SharedRegion {
  i32: Int32Array;
  i64: BigInt64Array;
  readonly #sab: SharedArrayBuffer;

  constructor(sab: SharedArrayBuffer) {
    this.#sab = sab;
    const len = sab.byteLength;
    this.i32 = new Int32Array(sab, 0, len >> 2);
    this.i64 = new BigInt64Array(sab, 0, len >> 3);
  }

  refresh(): void {
    const len = this.#sab.byteLength;
    if (len >> 2 === this.i32.length) return;
    this.i32 = new Int32Array(this.#sab, 0, len >> 2);
    this.i64 = new BigInt64Array(this.#sab, 0, len >> 3);
  }

  get byteLength(): number {
    return this.#sab.byteLength;
  }

  get maxByteLength(): number {
    return this.#sab.maxByteLength;
  }

  grow(bytes: number): boolean {
    if (bytes <= this.#sab.byteLength) return true;
    if (bytes > this.#sab.maxByteLength) return false;
    try {
      this.#sab.grow(bytes);
    } catch {
      // Another thread grew it concurrently past our request, or the reservation is exhausted.
    }
    this.refresh();
    return this.#sab.byteLength >= bytes;
  }

  wait(index: number, expected: number, timeoutMs: number): WaitResult {
    return Atomics.wait(this.i32, index, expected, timeoutMs);
  }

  waitAsync(index: number, expected: number, timeoutMs: number): Promise<WaitResult> | WaitResult {
    const r = Atomics.waitAsync(this.i32, index, expected, timeoutMs);
    return r.async ? (r.value as Promise<WaitResult>) : (r.value as WaitResult);
  }

  notify(index: number, count = Number.POSITIVE_INFINITY): number {
    return Atomics.notify(this.i32, index, count);
  }

  descriptor(): RegionDescriptor {
    return { backend: 'sab', buffer: this.#sab };
  }
}

/** The in-process backend: growable SharedArrayBuffers and Atomics wait/notify. */
export const sabBackend: SharedMemoryBackend = {
  name: 'sab',
  createRegion(bytes: number, maxBytes: number): SharedRegion {
    const sab = new SharedArrayBuffer(align8(bytes), { maxByteLength: align8(maxBytes) });
    return new SabRegion(sab);
  },
  attachRegion(desc: RegionDescriptor): SharedRegion {
    if (desc.backend !== 'sab' || !(desc.buffer instanceof SharedArrayBuffer)) {
      throw new TypeError(`cannot attach a '${String(desc.backend)}' region with the sab backend`);
    }
    return new SabRegion(desc.buffer);
  },
};

function align8(n: number): number {
  return Math.ceil(n / 8) * 8;
}
