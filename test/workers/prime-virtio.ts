// Worker of virtio-dma-buf.test: a second virtio-gpu device in another thread. It resolves the
// main thread's UUID back to the buffer and exports one of its own.
import { parentPort } from 'node:worker_threads';
import type { DmaBuf } from '../../src/dma-buf.js';
import {
  isVirtioDmaBuf,
  type VirtioChannel,
  VirtioGpuDevice,
  virtioDmaBufGetUuid,
} from '../../src/virtio-dma-buf.js';

const port = parentPort;
if (!port) throw new Error('worker only');
let dev: VirtioGpuDevice | undefined;
const bufs: DmaBuf[] = [];
port.on('message', async (m: { op: string; channel?: VirtioChannel; uuid?: string }) => {
  try {
    if (m.op === 'connect' && m.channel) {
      dev = new VirtioGpuDevice(m.channel);
      port.postMessage({ op: 'connected' });
    } else if (m.op === 'resolve' && dev && m.uuid) {
      const buf = await dev.importByUuid(m.uuid);
      bufs.push(buf);
      using map = buf.mmap();
      const uuid = await virtioDmaBufGetUuid(buf);
      const mine = dev.export(4096);
      bufs.push(mine);
      const myUuid = await virtioDmaBufGetUuid(mine);
      port.postMessage({
        op: 'resolved',
        ino: buf.ino,
        virtio: isVirtioDmaBuf(buf),
        uuid,
        byte: map.get(0),
        myUuid,
        myIno: mine.ino,
      });
    } else if (m.op === 'unknown' && dev) {
      await dev.importByUuid('00000000-0000-0000-0000-000000000000').then(
        () => port.postMessage({ op: 'unknown', code: 'none' }),
        (e: { code?: string }) => port.postMessage({ op: 'unknown', code: e.code }),
      );
    } else if (m.op === 'finish') {
      for (const b of bufs) b.dispose();
      dev?.close();
      port.postMessage({ op: 'done' });
    }
  } catch (e) {
    port.postMessage({ op: 'error', message: String((e as Error).stack ?? e) });
  }
});
port.postMessage({ op: 'ready' });
