/**
 * Errors with errno names.
 *
 * The kernel reports failures as negative errno values. Every failure that the kernel reports
 * that way is thrown here as a {@linkcode DmaBufError} carrying the errno name (`code`) and its
 * Linux number (`errno`), so callers can branch on `err.code === 'ETIME'` exactly as C code
 * branches on `ret == -ETIME`.
 *
 * @module
 */

/** Linux errno numbers used by the dma-buf family (x86-64 values). */
export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  EINVAL: 22,
  EMFILE: 24,
  ENOTTY: 25,
  ENOSPC: 28,
  ERANGE: 34,
  EDEADLK: 35,
  ENOSYS: 38,
  ELOOP: 40,
  ENODATA: 61,
  ETIME: 62,
  EOVERFLOW: 75,
  EBADFD: 77,
  EOPNOTSUPP: 95,
  ETIMEDOUT: 110,
  EALREADY: 114,
  ESTALE: 116,
  ECANCELED: 125,
  /** Kernel-internal: a wait interrupted by a signal (here: an AbortSignal). */
  ERESTARTSYS: 512,
} as const;

/** The name of an errno, e.g. `'EINVAL'`. */
export type ErrnoName = keyof typeof ERRNO;

/** Largest errno value the kernel accepts as an error code (`MAX_ERRNO`). */
export const MAX_ERRNO = 4095;

const NAMES = new Map<number, ErrnoName>(
  Object.entries(ERRNO).map(([k, v]) => [v, k as ErrnoName]),
);

/** The errno name for a (positive or negative) errno number, if it is one we know. */
export function errnoName(errno: number): ErrnoName | undefined {
  return NAMES.get(Math.abs(errno));
}

/**
 * The one error class of the project: a failure the kernel would report as `-code`.
 *
 * @example
 * ```ts
 * import { DmaBufError } from 'dmabuf';
 * try {
 *   fence.signal();
 * } catch (e) {
 *   if (e instanceof DmaBufError && e.code === 'EINVAL') console.log('already signalled');
 * }
 * ```
 */
export class DmaBufError extends Error {
  /** The errno name, e.g. `'EINVAL'`. */
  readonly code: ErrnoName;
  /** The positive Linux errno number, e.g. 22. */
  readonly errno: number;

  constructor(code: ErrnoName, message: string, options?: { cause?: unknown }) {
    super(`${code}: ${message}`, options);
    this.name = 'DmaBufError';
    this.code = code;
    this.errno = ERRNO[code];
  }

  /** The kernel-style negative return value, e.g. -22. */
  get negative(): number {
    return -this.errno;
  }
}

/** Throws `EINVAL` with `message` unless `cond` holds. */
export function assertArg(cond: boolean, message: string): asserts cond {
  if (!cond) throw new DmaBufError('EINVAL', message);
}
