/**
 * One side of a one-way-latency ping-pong between two worker threads (see `PingPongMode`).
 *
 * Each hop: the signaller stamps `process.hrtime.bigint()` (CLOCK_MONOTONIC, shared by all
 * threads of the process) and signals; the receiver stamps again as soon as it runs and records
 * the difference. Only one hop is in flight at a time, so one stamp slot suffices.
 *
 * @module
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { PingPongData, PingPongResult } from './protocol.js';

/** Int32 index of the turn counter: hop k (1-based) is signalled by storing k. */
const SEQ = 0;
/** Int32 index nobody notifies: `Atomics.wait` on it with a timeout is a synchronous sleep. */
const SLEEP = 1;
/** Byte offset of the BigInt64 signal stamp. */
const STAMP_OFFSET = 8;
/** Give up if the peer is silent this long (it died); keeps the run from hanging. */
const STALL_MS = 20_000;

const data = workerData as PingPongData;
const total = data.warmup + data.hops;
const latenciesUs = new Float64Array(data.hops);

function finish(asleep: number): void {
  const result: PingPongResult = { latenciesUs, asleep };
  parentPort?.postMessage(result, [latenciesUs.buffer]);
}

function runAtomics(sab: SharedArrayBuffer): void {
  const i32 = new Int32Array(sab, 0, 2);
  const stamp = new BigInt64Array(sab, STAMP_OFFSET, 1);
  const sleep = data.mode === 'atomics-sleep' ? data.sleepMs : 0;

  const signal = (seq: number): void => {
    if (sleep > 0) Atomics.wait(i32, SLEEP, 0, sleep);
    Atomics.store(stamp, 0, process.hrtime.bigint());
    Atomics.store(i32, SEQ, seq);
    Atomics.notify(i32, SEQ);
  };

  let asleep = 0;
  if (data.role === 0) signal(1);
  for (let i = 0; i < total; i++) {
    // Role 1 receives the odd hops, role 0 the even ones.
    const expected = data.role === 0 ? 2 * i + 2 : 2 * i + 1;
    let slept = false;
    let v = Atomics.load(i32, SEQ);
    while (v !== expected) {
      const r = Atomics.wait(i32, SEQ, v, STALL_MS);
      if (r === 'timed-out') throw new Error(`pingpong: peer silent for ${STALL_MS} ms`);
      if (r === 'ok') slept = true;
      v = Atomics.load(i32, SEQ);
    }
    const now = process.hrtime.bigint();
    const k = i - data.warmup;
    if (k >= 0) {
      latenciesUs[k] = Number(now - Atomics.load(stamp, 0)) / 1000;
      if (slept) asleep++;
    }
    // Role 0 does not answer its last hop; role 1's last answer is role 0's last hop.
    if (data.role === 0 && i === total - 1) break;
    signal(expected + 1);
  }
  finish(asleep);
}

function runPort(): void {
  const port = data.port;
  if (!port) throw new Error('pingpong: port mode without a port');
  let received = 0;
  port.on('message', (sent: unknown) => {
    const now = process.hrtime.bigint();
    if (typeof sent !== 'bigint') throw new Error('pingpong: expected a bigint stamp');
    const k = received++ - data.warmup;
    if (k >= 0) latenciesUs[k] = Number(now - sent) / 1000;
    const last = received === total;
    if (!last || data.role === 1) port.postMessage(process.hrtime.bigint());
    if (last) {
      port.removeAllListeners('message');
      finish(0);
    }
  });
  if (data.role === 0) port.postMessage(process.hrtime.bigint());
}

if (data.mode === 'port') {
  runPort();
} else {
  if (!data.sab) throw new Error('pingpong: atomics mode without a SharedArrayBuffer');
  runAtomics(data.sab);
}
