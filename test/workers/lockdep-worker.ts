// Worker side of the cross-thread lockdep tests: performs one scenario named in workerData and
// posts back what this thread saw.
import { parentPort, threadId, workerData } from 'node:worker_threads';
import {
  dmaFenceBeginSignalling,
  dmaFenceEndSignalling,
  dmaFenceMightWait,
  LockClass,
  lockAcquire,
  lockdepAttachState,
  lockdepEnable,
  lockdepReports,
  lockRelease,
} from '../../src/lockdep.js';

interface Job {
  op: 'wait-under-lock' | 'section-takes-lock' | 'ids';
  lock?: string;
  names?: string[];
  attach?: SharedArrayBuffer;
}

const job = workerData as Job;
if (job.attach) lockdepAttachState(job.attach);
lockdepEnable(true, 'record');

const ids: Record<string, number> = {};
switch (job.op) {
  case 'wait-under-lock': {
    // Thread B of the seed: holds mutex A and waits on a fence.
    const a = new LockClass(job.lock ?? 'mutexA');
    lockAcquire(a);
    dmaFenceMightWait();
    lockRelease(a);
    break;
  }
  case 'section-takes-lock': {
    // Thread A of the seed: on the signalling path, takes mutex A.
    const a = new LockClass(job.lock ?? 'mutexA');
    const cookie = dmaFenceBeginSignalling();
    lockAcquire(a);
    lockRelease(a);
    dmaFenceEndSignalling(cookie);
    break;
  }
  case 'ids':
    for (const n of job.names ?? []) ids[n] = new LockClass(n).id;
    break;
}

parentPort?.postMessage({ threadId, reports: lockdepReports(), ids });
