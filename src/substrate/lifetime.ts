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

/** The two fields a tracked handle carries: its cohort and its place in it. */
export interface Tracked {
  _cohort: Cohort | undefined;
  _cohortIndex: number;
}

/** A group of handles registered together. */
export interface Cohort {
  /** Pairs (slot, gen); slot -1 once disposed. */
  readonly entries: number[];
}

/** A safety net for one kind of handle. */
export class SafetyNet {
  readonly #registry: FinalizationRegistry<number[]>;
  /**
   * The cohort being filled, held weakly: a strong reference here would keep the newest cohort
   * (up to 63 lost handles) from ever being collected.
   */
  #cohort: WeakRef<Cohort> | undefined;
  /** How many references the net has given back (tests and debug output read it). */
  reclaimed = 0;

  /** `release(slot, gen)` drops the reference a lost handle held. */
  constructor(release: (slot: number, gen: number) => void) {
    this.#registry = new FinalizationRegistry((entries) => {
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

  /** Puts a live handle under the net. */
  track(h: Tracked, slot: number, gen: number): void {
    let c = this.#current;
    if (!c) {
      c = this.#cohort?.deref();
      if (c) this.#holdForJob(c);
    }
    if (!c || c.entries.length >= COHORT * 2) {
      c = { entries: [] };
      this.#registry.register(c, c.entries);
      this.#cohort = new WeakRef(c);
      this.#holdForJob(c);
    }
    h._cohort = c;
    h._cohortIndex = c.entries.length;
    c.entries.push(slot, gen);
  }

  #holdForJob(c: Cohort): void {
    if (this.#current === undefined) queueMicrotask(() => (this.#current = undefined));
    this.#current = c;
  }

  /** Takes a disposed handle out of the net. */
  untrack(h: Tracked): void {
    if (h._cohort) h._cohort.entries[h._cohortIndex] = -1;
    h._cohort = undefined;
  }
}
