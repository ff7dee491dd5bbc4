/**
 * dmabuf: the Linux dma-buf framework for JavaScript threads.
 *
 * @module
 */
export {
  DMA_FENCE_FLAG,
  DmaFence,
  type DmaFenceCb,
  type DmaFenceInit,
  type DmaFenceOps,
  type DmaFenceWaitOptions,
  seqnoIsLater,
  type WaitAnyResult,
} from './dma-fence.js';
export { DmaFenceArray } from './dma-fence-array.js';
export { DmaFenceChain } from './dma-fence-chain.js';
export { isContainer } from './dma-fence-containers.js';
export { DmaFenceUnwrap, dedupArray, unwrap, unwrapMerge } from './dma-fence-unwrap.js';
export * from './lockdep.js';
export { DmaBufError, ERRNO, type ErrnoName, errnoName, MAX_ERRNO } from './substrate/errno.js';
export type { SharedMessage } from './substrate/handle.js';
