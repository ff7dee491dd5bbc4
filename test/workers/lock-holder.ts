// Takes one of the domain's own locks and never lets go: the test terminates this worker while
// it holds the lock, as a worker can be stopped anywhere.
import { parentPort, threadId, workerData } from 'node:worker_threads';
import { DOMAIN_LOCK_WORDS, domain } from '../../src/substrate/domain.js';
import { lockOwnedWord } from '../../src/substrate/lock.js';

const d = domain();
d.threadIndex();
const which = workerData as keyof typeof DOMAIN_LOCK_WORDS;
lockOwnedWord(d.region, DOMAIN_LOCK_WORDS[which], threadId);
parentPort?.postMessage('held');
Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
