// A registered test exporter ("module"): every thread that imports this file has its ops. Its
// release counts in a SharedArrayBuffer inherited through the environment data, and records the
// releasing thread.
import {
  getEnvironmentData,
  isMainThread,
  setEnvironmentData,
  threadId,
} from 'node:worker_threads';
import {
  type DmaBuf,
  type DmaBufOps,
  dmaBufMapMemory,
  dmaBufUnmapMemory,
  registerDmaBufExporter,
} from '../../src/dma-buf.js';

const KEY = 'dmabuf-test:release-counter';
if (isMainThread && getEnvironmentData(KEY) === undefined) {
  setEnvironmentData(KEY, new SharedArrayBuffer(16) as unknown as string);
}

/** [0]: registered releases, [1]: thread id of the last one, [2]: local releases, [3]: its tid. */
export const counters = new Int32Array(getEnvironmentData(KEY) as unknown as SharedArrayBuffer);

export const REGISTERED = 'test-exporter';

export const registeredOps: DmaBufOps = {
  map: dmaBufMapMemory,
  unmap: dmaBufUnmapMemory,
  release(_buf: DmaBuf) {
    Atomics.add(counters, 0, 1);
    Atomics.store(counters, 1, threadId);
  },
  mmap() {},
  vmap() {},
  vunmap() {},
};
registerDmaBufExporter(REGISTERED, registeredOps);

/** Thread-local ops (not registered): only the exporting thread runs them. */
export function localOps(): DmaBufOps {
  return {
    map: dmaBufMapMemory,
    unmap: dmaBufUnmapMemory,
    release() {
      Atomics.add(counters, 2, 1);
      Atomics.store(counters, 3, threadId);
    },
    mmap() {},
  };
}
