/**
 * The garbage-collection safety net for handles that were never disposed.
 *
 * Objects are released deterministically with `dispose()` / `using`. A handle that is dropped
 * without that would leak its reference (and so its shared record) forever; this net gives the
 * reference back once the garbage collector has proved the handle unreachable. It is a net, not
 * a mechanism: its timing is up to the collector, so code must not rely on it.
 *
 * Registering every handle with a `FinalizationRegistry` costs about half a microsecond, more
 * than creating a fence. Handles are therefore registered in cohorts: each handle holds a strong
 * reference to its cohort token, and only the token is registered. When every handle of a cohort
 * is unreachable, the token is collected and each entry not disposed by then is released.
 *
 * @module
 */

const COHORT = 64;
/** Spare cohorts kept for reuse. */
const SPARE = 16;

/** The two fields a tracked handle carries: its cohort and its place in it. */
export interface Tracked {
  _cohort: Cohort | undefined;
  _cohortIndex: number;
}

/** A group of handles registered together. */
export interface Cohort {
  /** Entries used so far (pairs). */
  n: number;
  /** Handles of the cohort not disposed yet. */
  live: number;
  /** Pairs (slot, gen); slot -1 once disposed. */
  readonly entries: Int32Array;
}

/** A safety net for one kind of handle. */
export class SafetyNet {
  readonly #registry: FinalizationRegistry<Int32Array>;
  /**
   * The cohort being filled, held weakly: a strong reference here would keep the newest cohort
   * (up to 63 lost handles) from ever being collected.
   */
  #cohort: WeakRef<Cohort> | undefined;
  /** How many references the net has given back (tests and debug output read it). */
  reclaimed = 0;

  /** `release(slot, gen)` drops the reference a lost handle held. */
  constructor(release: (slot: number, gen: number) => void) {
    this.#registry = new FinalizationRegistry((entries: Int32Array) => {
      for (let i = 0; i < entries.length; i += 2) {
        const slot = entries[i]!;
        if (slot < 0) continue;
        this.reclaimed++;
        try {
          release(slot, entries[i + 1]!);
        } catch {
          // The object is already gone (released through another path): nothing to give back.
        }
      }
    });
  }

  /**
   * The same cohort held strongly until the end of the current job, so that a loop creating
   * many handles neither pays a `deref()` per handle (each one also pins its target for the
   * job) nor keeps the cohort alive afterwards.
   */
  #current: Cohort | undefined;
  /** Full cohorts whose handles were all disposed, ready for reuse. */
  #spare: Cohort[] = [];

  /** Puts a live handle under the net. */
  track(h: Tracked, slot: number, gen: number): void {
    let c = this.#current;
    if (!c) {
      c = this.#cohort?.deref();
      if (c) this.#holdForJob(c);
    }
    if (c && c.n >= COHORT * 2 && c.live === 0) {
      // The full cohort being filled has no live handle left: start it over in place.
      c.n = 0;
      c.entries.fill(-1);
    } else if (!c || c.n >= COHORT * 2) {
      c = this.#spare.pop();
      if (!c) {
        // A fixed-size typed array, filled with -1 (unused): no growth, no boxing, and the
        // finalizer skips the unused tail like the disposed entries.
        c = { n: 0, live: 0, entries: new Int32Array(COHORT * 2).fill(-1) };
        this.#registry.register(c, c.entries);
      }
      this.#cohort = new WeakRef(c);
      this.#holdForJob(c);
    }
    h._cohort = c;
    const i = c.n;
    h._cohortIndex = i;
    c.entries[i] = slot;
    c.entries[i + 1] = gen;
    c.n = i + 2;
    c.live++;
  }

  #holdForJob(c: Cohort): void {
    if (this.#current === undefined) queueMicrotask(() => (this.#current = undefined));
    this.#current = c;
  }

  /** Takes a disposed handle out of the net. */
  untrack(h: Tracked): void {
    const c = h._cohort;
    if (!c) return;
    c.entries[h._cohortIndex] = -1;
    h._cohort = undefined;
    if (
      --c.live === 0 &&
      c.n >= COHORT * 2 &&
      this.#spare.length < SPARE &&
      c !== this.#current &&
      c !== this.#cohort?.deref()
    ) {
      // Every handle of a full cohort was disposed: reuse it (still registered, never
      // collected while spare) instead of registering a new one and finalizing this one. Not
      // the cohort being filled: it would be handed out again while spare, and a spare cohort
      // is held strongly, so its lost handles would never be reclaimed.
      c.n = 0;
      c.entries.fill(-1);
      this.#spare.push(c);
    }
  }
}
