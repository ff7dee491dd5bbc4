/**
 * Sends every message straight back to the parent: an ArrayBuffer is moved back (`transfer`
 * mode) or copied back (structured clone), to time buffer hand-offs by `postMessage`.
 *
 * @module
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { EchoData } from './protocol.js';

const { transfer } = workerData as EchoData;
const port = parentPort;
if (!port) throw new Error('echo: must run as a worker');

port.on('message', (m: unknown) => {
  if (transfer && m instanceof ArrayBuffer) port.postMessage(m, [m]);
  else port.postMessage(m);
});
