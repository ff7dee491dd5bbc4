/**
 * dmabuf: the Linux dma-buf framework for JavaScript threads.
 *
 * @module
 */

export {
  DEFAULT_MAX_SEGMENT_SIZE,
  Device,
  type DeviceInit,
  DmaDataDirection,
  type DmaPageTableDescriptor,
  type DmaPteDescriptor,
  DmaWindow,
  isDmaDirection,
} from './device.js';
export { DmaEngine, type DmaJob, type DmaJobOptions, type DmaRange } from './devices/dma-engine.js';
export {
  DMA_BUF_NAME_LEN,
  DMA_BUF_SYNC_END,
  DMA_BUF_SYNC_READ,
  DMA_BUF_SYNC_RW,
  DMA_BUF_SYNC_START,
  DMA_BUF_SYNC_VALID_FLAGS_MASK,
  DMA_BUF_SYNC_WRITE,
  DmaBuf,
  DmaBufAttachment,
  type DmaBufAttachOps,
  type DmaBufExportInfo,
  type DmaBufInfo,
  type DmaBufLookup,
  DmaBufMapping,
  type DmaBufMessage,
  type DmaBufMmapOptions,
  type DmaBufOps,
  type DmaBufVma,
  type DmaBufWaitOptions,
  dmaBufBeginCpuAccessMemory,
  dmaBufEndCpuAccessMemory,
  dmaBufMapMemory,
  dmaBufNoncoherentMappings,
  dmaBufUnmapMemory,
  FMODE_READ,
  FMODE_WRITE,
  type IosysMap,
  MAP_PRIVATE,
  MAP_SHARED,
  memoryExporterOps,
  O_ACCMODE,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  registerDmaBufExporter,
  SEEK_CUR,
  SEEK_END,
  SEEK_SET,
} from './dma-buf.js';
export {
  type DmaBufExporterTotals,
  type DmaBufInfoDump,
  type DmaBufInfoEntry,
  type DmaBufInfoFence,
  type DmaBufSysfsStats,
  dmaBufDebugInfo,
  dmaBufDebugShow,
  dmaBufExporterTotals,
  dmaBufHeapTotals,
  dmaBufSysfsRead,
  dmaBufSysfsStats,
} from './dma-buf-bufinfo.js';
export { dmaBufListCount, MAX_LISTED_DEVICES } from './dma-buf-list.js';
export {
  allocBacking,
  type Backing,
  BufferMemory,
  type BufferMemoryDescriptor,
  type MemoryChunk,
  type MemoryPage,
  type MemoryPiece,
  MemoryView,
  PAGE_SHIFT,
  PAGE_SIZE,
  pageAlign,
} from './dma-buf-memory.js';
export { DmaBufSyncFile, exportSyncFile, importSyncFile } from './dma-buf-sync-file.js';
export { dmaDebugEnabled, dmaDebugReports, setDmaDebug } from './dma-debug.js';
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
export {
  DMA_HEAP_IOCTL_ALLOC,
  DMA_HEAP_VALID_FD_FLAGS,
  DMA_HEAP_VALID_HEAP_FLAGS,
  DmaHeap,
  type DmaHeapAllocationData,
  type DmaHeapMessage,
  type DmaHeapOptions,
  type DmaHeapStats,
  dmaHeapFind,
  dmaHeapNames,
  dmaHeapSyncExporters,
  HEAP_ORDERS,
  HeapKind,
} from './dma-heap.js';
export {
  DmaResv,
  DmaResvIter,
  DmaResvUsage,
  type DmaResvWaitOptions,
  dmaResvUsageRw,
} from './dma-resv.js';
export {
  DRM_EXEC_IGNORE_DUPLICATES,
  DRM_EXEC_INTERRUPTIBLE_WAIT,
  DrmExec,
  type DrmExecOptions,
  type LockAllOptions,
  lockAll,
  lockAllAsync,
} from './drm-exec.js';
export {
  DRM_FILE_PAGE_OFFSET_START,
  DrmDevice,
  type DrmDeviceInit,
  type DrmDumb,
  DrmGemFile,
  type GemImportAttach,
  type GemMapping,
  type GemMmapOptions,
  GemObject,
  type GemObjectStats,
} from './drm-gem.js';
export {
  DRM_CLOEXEC,
  DRM_GEM_EXPORTER,
  DRM_RDWR,
  drmGemPrimeExport,
  drmGemPrimeImport,
  drmGemPrimeOps,
  isGemPrimeDmaBuf,
  primeFdToHandle,
  primeHandleToFd,
} from './drm-prime.js';
export {
  DRM_CAP_SYNCOBJ,
  DRM_CAP_SYNCOBJ_TIMELINE,
  DRM_SYNCOBJ_CREATE_SIGNALED,
  DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE,
  DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_TIMELINE,
  DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_EXPORT_SYNC_FILE,
  DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_TIMELINE,
  DRM_SYNCOBJ_QUERY_FLAGS_LAST_SUBMITTED,
  DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL,
  DRM_SYNCOBJ_WAIT_FLAGS_WAIT_AVAILABLE,
  DRM_SYNCOBJ_WAIT_FLAGS_WAIT_DEADLINE,
  DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT,
  DrmFile,
  type DrmFileOptions,
  DrmSyncobj,
  type DrmWaitOptions,
  SYNCOBJ_NO_INDEX,
  SYNCOBJ_WAIT_FOR_SUBMIT_TIMEOUT_MS,
  SyncobjEventfd,
  type SyncobjTransfer,
  type SyncobjWaitOptions,
  syncobjTimeoutNs,
} from './drm-syncobj.js';
export {
  CMA_ALIGNMENT,
  CMA_HEAP_DEFAULT_CAPACITY,
  createCmaHeap,
  getOrder,
} from './heaps/cma-heap.js';
export { createSystemHeap, SYSTEM_HEAP_DEFAULT_CAPACITY } from './heaps/system-heap.js';
export * from './lockdep.js';
export {
  F_SEAL_FUTURE_WRITE,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  MemFd,
  type MemFdMessage,
  type MemFdOptions,
} from './memfd.js';
export {
  DMA_MAPPING_ERROR,
  SG_MAX_SEGMENT_UNLIMITED,
  type SgDmaSegment,
  SgEntry,
  type SgPageIter,
  SgTable,
} from './scatterlist.js';
export { DmaBufError, ERRNO, type ErrnoName, errnoName, MAX_ERRNO } from './substrate/errno.js';
export type { SharedMessage } from './substrate/handle.js';
export { SW_SYNC_DRIVER_NAME, SwSyncTimeline } from './sw-sync.js';
export {
  POLLIN,
  SYNC_NAME_MAX_BYTES,
  type SyncFenceInfo,
  SyncFile,
  type SyncFileInfo,
  type SyncFileInfoRequest,
  type SyncMergeOptions,
} from './sync-file.js';
export {
  DEFAULT_MEMLOCK_LIMIT,
  PinAccount,
  UDMABUF_CREATE,
  UDMABUF_CREATE_LIST,
  UDMABUF_EXP_NAME,
  UDMABUF_FLAGS_CLOEXEC,
  type UdmabufCreate,
  type UdmabufCreateList,
  type UdmabufItem,
  type UdmabufOptions,
  udmabufCreate,
  udmabufCreateList,
  udmabufIoctl,
  udmabufParams,
} from './udmabuf.js';
export {
  isVirtioDmaBuf,
  VIRTIO_GPU_EXPORTER,
  type VirtioChannel,
  type VirtioDmaBufOps,
  VirtioGpuDevice,
  type VirtioGpuDeviceOptions,
  VirtioHost,
  type VirtioHostOptions,
  VirtioUuidState,
  virtioDmaBufAttach,
  virtioDmaBufExport,
  virtioDmaBufGetUuid,
  virtioGpuDmaBufOps,
  virtioGpuUuidState,
} from './virtio-dma-buf.js';
export {
  WwAcquireCtx,
  WwClass,
  type WwLockOptions,
  WwMutex,
  wwMutexDebugSlowpath,
  wwStampAfter,
} from './ww-mutex.js';
