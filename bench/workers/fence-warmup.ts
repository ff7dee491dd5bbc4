/**
 * Warm-up for the fence latency workers: runs the fence paths locally so that the timed hops
 * run optimised code, not the interpreter.
 *
 * @module
 */
import { DmaFence } from '../../src/index.js';

/**
 * Signalled and unsignalled waits (with an async wait every 100th fence when `withAsync`), then
 * waits that really sleep and time out: the path a long wait takes, which the others never
 * reach.
 */
export async function warmUpFenceWaits(withAsync: boolean): Promise<void> {
  const ctx = DmaFence.contextAlloc(1);
  for (let i = 0; i < 20_000; i++) {
    const f = new DmaFence(ctx, BigInt(i + 1));
    f.waitSync({ timeout: 0 });
    if (withAsync && i % 100 === 0) {
      const p = f.wait();
      f.signal();
      await p;
    } else f.signal();
    f.waitSync({ timeout: 1 });
    f.dispose();
  }
  for (let i = 0; i < 2_000; i++) {
    const f = new DmaFence(ctx, BigInt(i + 1));
    f.waitSync({ timeout: 0.002 });
    f.signal();
    f.dispose();
  }
}
