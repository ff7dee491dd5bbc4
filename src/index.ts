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
export * from './lockdep.js';
export { DmaBufError, ERRNO, type ErrnoName, errnoName, MAX_ERRNO } from './substrate/errno.js';
export type { SharedMessage } from './substrate/handle.js';
