/**
 * Handles: a thread's reference to an object whose state lives in a shared record.
 *
 * A handle names a record by (slot, generation) and owns one reference on it, like a kernel
 * pointer obtained with `*_get()`. `dispose()` (or `using`) puts that reference; the object is
 * released when the last reference in any thread is gone. Every method checks the handle before
 * touching shared state, so a disposed or stale handle gets `EBADF` instead of reaching another
 * object.
 *
 * Handing an object to another thread (see {@linkcode SharedObject.share}) works like passing a
 * file descriptor over a socket: the message carries a reference "in flight", which the
 * receiving thread adopts with the class's `import`. Each message can be imported once.
 *
 * @module
 */
import {
  adoptDomain,
  type Domain,
  type DomainDescriptor,
  domain,
  type RecordType,
} from './domain.js';
import { DmaBufError } from './errno.js';
import { type Cohort, SafetyNet, type Tracked } from './lifetime.js';

/** The postable form of a shared object; send it with `postMessage`. */
export interface SharedMessage {
  /** Which kind of object this is, e.g. `'dma-fence'`. */
  readonly $dmabuf: string;
  readonly domain: DomainDescriptor;
  readonly slot: number;
  readonly gen: number;
  /** One word: 0 until the message is imported; makes the in-flight reference one-shot. */
  readonly claim: SharedArrayBuffer;
}

const LIVE = 0;
const DISPOSED = 1;
const BORROWED = 2;

/** Per-kind data shared by all handles of one object kind. */
export class HandleKind {
  readonly net: SafetyNet;
  constructor(
    /** Kind name used in messages and errors, e.g. `'dma-fence'`. */
    readonly name: string,
    readonly type: RecordType,
    /** Drops one reference on the record (and releases the object when it was the last). */
    readonly put: (slot: number) => void,
  ) {
    this.net = new SafetyNet((slot, gen) => {
      if (domain().gen(slot) === gen) put(slot);
    });
  }
}

/** Base class of every handle to a shared object. */
export abstract class SharedObject implements Disposable, Tracked {
  // Declared, and assigned in the constructor: class field initialisers cost a call per handle.
  /** @internal */ declare _slot: number;
  /** @internal */ declare _gen: number;
  /** @internal */ declare _state: number;
  /** @internal */ declare _cohort: Cohort | undefined;
  /** @internal */ declare _cohortIndex: number;

  /** @internal Wraps an existing reference (owned) or borrows one (not owned). */
  constructor(slot: number, gen: number, owned: boolean) {
    this._slot = slot;
    this._gen = gen;
    this._state = owned ? LIVE : BORROWED;
    this._cohort = undefined;
    this._cohortIndex = 0;
    if (owned) this._kind().net.track(this, slot, gen);
  }

  /** @internal The kind of this handle. */
  abstract _kind(): HandleKind;

  /**
   * Checks that the handle still names its object; returns the domain.
   *
   * @throws {DmaBufError} EBADF for a disposed handle or an object that no longer exists.
   */
  _check(): Domain {
    const d = domain();
    if (this._state === DISPOSED) {
      throw new DmaBufError('EBADF', `${this._kind().name} handle used after dispose()`);
    }
    if (d.peekGen(this._slot) !== this._gen) {
      throw new DmaBufError('EBADF', `stale ${this._kind().name} handle: the object was released`);
    }
    return d;
  }

  /** True until this handle is disposed. */
  get alive(): boolean {
    return this._state !== DISPOSED && domain().gen(this._slot) === this._gen;
  }

  /**
   * Puts this handle's reference. Idempotent: a second call does nothing.
   *
   * @throws {DmaBufError} EINVAL on a borrowed handle (one passed to a callback), which owns no
   *   reference; take one with `get()` instead.
   */
  dispose(): void {
    if (this._state === DISPOSED) return;
    if (this._state === BORROWED) {
      throw new DmaBufError('EINVAL', `cannot dispose a borrowed ${this._kind().name} handle`);
    }
    this._state = DISPOSED;
    const kind = this._kind();
    kind.net.untrack(this);
    kind.put(this._slot);
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /**
   * A message that hands this object to another thread: post it, and call the class's
   * `import(msg)` there. The message holds its own reference until it is imported.
   *
   * @throws {DmaBufError} EBADF for a disposed or stale handle.
   */
  share(): SharedMessage {
    const d = this._check();
    d.get(this._slot);
    return {
      $dmabuf: this._kind().name,
      domain: d.descriptor(),
      slot: this._slot,
      gen: this._gen,
      claim: new SharedArrayBuffer(4),
    };
  }

  /**
   * Gives back the in-flight reference of a message that will never be imported.
   *
   * @throws {DmaBufError} EBADF when the message was already imported or released.
   */
  static releaseShared(msg: SharedMessage, kind: HandleKind): void {
    claim(msg, kind);
    kind.put(msg.slot);
  }
}

/**
 * Takes the in-flight reference out of a message (once) and checks that it names a live object
 * of `kind`.
 *
 * @throws {DmaBufError} EINVAL for something that is not such a message; EBADF when it was
 *   already imported or the object is gone; EXDEV for an object of another domain.
 */
export function claim(msg: SharedMessage, kind: HandleKind): Domain {
  if (
    typeof msg !== 'object' ||
    msg === null ||
    msg.$dmabuf !== kind.name ||
    !(msg.claim instanceof SharedArrayBuffer) ||
    msg.claim.byteLength !== 4
  ) {
    throw new DmaBufError('EINVAL', `not a shared ${kind.name} message`);
  }
  const d = adoptDomain(msg.domain);
  if (Atomics.compareExchange(new Int32Array(msg.claim), 0, 0, 1) !== 0) {
    throw new DmaBufError('EBADF', `${kind.name} message was already imported`);
  }
  if (!d.isLive(msg.slot, msg.gen, kind.type)) {
    throw new DmaBufError('EBADF', `${kind.name} in message no longer exists`);
  }
  // A thread that holds shared objects takes part in the domain: its thread slot is where its
  // held locks are listed, so that reaping it after a terminate() can release them. Without a
  // free slot (EMFILE) it still holds the object; only that listing is lost.
  try {
    d.threadIndex();
  } catch (e) {
    if (!(e instanceof DmaBufError && e.code === 'EMFILE')) throw e;
  }
  return d;
}
