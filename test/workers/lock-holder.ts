// Takes a lock and never lets go: the test terminates this worker while it holds the lock, as
// a worker can be stopped anywhere. Either one of the domain's own (robust) locks, by name, or
// the lock word of a fence handed over in a message (a plain lock, listed in the held list).
import { parentPort, threadId, workerData } from 'node:worker_threads';
import { F } from '../../src/dma-fence.js';
import { DmaFence, type SharedMessage } from '../../src/index.js';
import { DOMAIN_LOCK_WORDS, domain } from '../../src/substrate/domain.js';
import { lockOwnedWord, lockWord } from '../../src/substrate/lock.js';

const d = domain();
d.threadIndex();
const what = workerData as keyof typeof DOMAIN_LOCK_WORDS | { fence: SharedMessage };
if (typeof what === 'string') {
  lockOwnedWord(d.region, DOMAIN_LOCK_WORDS[what], threadId);
} else {
  const f = DmaFence.import(what.fence);
  lockWord(d.region, d.base(f._slot) + F.LOCK);
}
parentPort?.postMessage('held');
Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
