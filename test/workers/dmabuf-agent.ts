// A scriptable worker for the cross-thread dma-buf tests: { id, op, ...args } in,
// { id, ok, value } or { id, ok: false, code, message } out. Buffers live in a map by name.
import { parentPort, threadId } from 'node:worker_threads';
import { DmaBuf, type DmaBufMessage, O_RDONLY, O_RDWR, PROT_READ } from '../../src/dma-buf.js';
import { BufferMemory } from '../../src/dma-buf-memory.js';
import { domain } from '../../src/substrate/domain.js';
import { DmaBufError } from '../../src/substrate/errno.js';
import { localOps, REGISTERED, registeredOps } from './dmabuf-exporter.js';

const port = parentPort;
if (!port) throw new Error('dmabuf-agent must run in a worker');
const bufs = new Map<string, DmaBuf>();

function buf(name: unknown): DmaBuf {
  const b = bufs.get(String(name));
  if (!b) throw new Error(`agent has no buffer '${String(name)}'`);
  return b;
}

type Req = { id: number; op: string; [k: string]: unknown };

function run(r: Req): unknown {
  switch (r.op) {
    case 'export': {
      const size = r.size as number;
      const b = DmaBuf.export({
        ops: r.registered ? registeredOps : localOps(),
        expName: r.registered ? REGISTERED : 'local-exporter',
        size,
        memory: BufferMemory.allocate(size, { chunkSize: 4096, separate: !!r.separate }),
        flags: r.readOnly ? O_RDONLY : O_RDWR,
        priv: {},
      });
      bufs.set(String(r.name), b);
      return b.ino.toString();
    }
    case 'share':
      return buf(r.name).share();
    case 'import': {
      const b = DmaBuf.import(r.msg as DmaBufMessage);
      bufs.set(String(r.name), b);
      return b.ino.toString();
    }
    case 'write': {
      using m = buf(r.name).mmap();
      const data = m.chunks;
      let k = 0;
      for (const c of data) for (let i = 0; i < c.length; i++) c[i] = (k++ * 7 + 3) & 0xff;
      return k;
    }
    case 'read': {
      using m = buf(r.name).mmap({ prot: PROT_READ });
      return Array.from(m.slice(0, r.length as number));
    }
    case 'tryWriteReadOnly': {
      const codes: string[] = [];
      const b = buf(r.name);
      const attempt = (fn: () => unknown): void => {
        try {
          fn();
          codes.push('ok');
        } catch (e) {
          codes.push(e instanceof DmaBufError ? e.code : String(e));
        }
      };
      attempt(() => b.mmap().unmap()); // default prot: read-only for an O_RDONLY file
      using m = b.mmap({ prot: PROT_READ });
      attempt(() => m.set(0, 1));
      attempt(() => m.write(0, new Uint8Array(1)));
      attempt(() => m.u8);
      attempt(() => m.chunks);
      attempt(() => m.mprotect(3));
      return codes;
    }
    case 'dispose':
      buf(r.name).dispose();
      bufs.delete(String(r.name));
      return true;
    case 'live':
      return domain().liveRecords();
    case 'tid':
      return threadId;
    default:
      throw new Error(`unknown op ${r.op}`);
  }
}

port.on('message', (r: Req) => {
  if (r.op === 'exit') {
    for (const b of bufs.values()) b.dispose();
    port.postMessage({ id: r.id, ok: true });
    port.close();
    return;
  }
  try {
    port.postMessage({ id: r.id, ok: true, value: run(r) });
  } catch (e) {
    port.postMessage({
      id: r.id,
      ok: false,
      code: e instanceof DmaBufError ? e.code : undefined,
      message: e instanceof Error ? e.message : String(e),
    });
  }
});
port.postMessage({ ready: threadId });
