/**
 * Shapes of the data exchanged with the bench workers (types only; no runtime code).
 *
 * @module
 */
import type { MessagePort } from 'node:worker_threads';

/**
 * How two `pingpong` workers pass the turn back and forth:
 * - `atomics`: `Atomics.store` + `Atomics.notify` on a SharedArrayBuffer, the other side in
 *   `Atomics.wait` (or just about to call it);
 * - `atomics-sleep`: the same, but each side sleeps `sleepMs` before signalling, so the other
 *   side is surely asleep in the futex and each hop measures a real wake-up;
 * - `port`: `postMessage` on a MessageChannel between the two workers.
 */
export type PingPongMode = 'atomics' | 'atomics-sleep' | 'port';

/** `workerData` of `workers/pingpong.js`. */
export interface PingPongData {
  mode: PingPongMode;
  /** Role 0 sends the first signal; role 1 answers. */
  role: 0 | 1;
  /** Hops received (and timed) per side, after the warm-up. */
  hops: number;
  /** Hops received per side before timing starts. */
  warmup: number;
  /** Pause before each signal in `atomics-sleep` mode. */
  sleepMs: number;
  /** Atomics modes: 16 zeroed bytes (Int32 turn counter, Int32 sleep slot, BigInt64 stamp). */
  sab?: SharedArrayBuffer;
  /** Port mode: this worker's end of the channel. */
  port?: MessagePort;
}

/** What a `pingpong` worker posts back when done. */
export interface PingPongResult {
  /** One-way latency of each timed hop received by this side, microseconds. */
  latenciesUs: Float64Array;
  /** Atomics modes: how many timed hops found this side blocked in `Atomics.wait`. */
  asleep: number;
}

/** `workerData` of `workers/echo.js`: sends every message straight back. */
export interface EchoData {
  /** Send ArrayBuffers back with `transfer` (a move) instead of a copy. */
  transfer: boolean;
}
