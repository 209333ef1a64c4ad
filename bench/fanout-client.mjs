// One worker thread's share of the fan-out subscribers: raw graphql-transport-ws over `ws`, so the
// client side costs as little as possible and the server dominates what is measured.
// Plain JavaScript: worker threads on Node 20 do not inherit tsx's loader.
import { parentPort, workerData } from 'node:worker_threads';
import WebSocket from 'ws';

const { url, id, count, finalStatus, timeoutMs } = workerData;
const query = 'subscription($id: ID!) { predictionUpdated(id: $id) { status updatedAt } }';
const latencies = [];
let initial = 0;
let failed = 0;
const sockets = [];

function open() {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, 'graphql-transport-ws', { perMessageDeflate: false });
    sockets.push(ws);
    let settled = false;
    const settle = () => {
      if (settled) return;
      settled = true;
      resolve();
    };
    ws.on('open', () => ws.send('{"type":"connection_init"}'));
    ws.on('message', (data) => {
      const receivedAt = Date.now();
      const msg = JSON.parse(String(data));
      if (msg.type === 'connection_ack') ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query, variables: { id } } }));
      else if (msg.type === 'next') {
        const p = msg.payload.data.predictionUpdated;
        if (p.status === finalStatus) latencies.push(receivedAt - Date.parse(p.updatedAt));
        else if (!settled) {
          initial++;
          settle();
        }
      }
    });
    ws.on('error', () => {
      failed++;
      settle();
    });
    ws.on('close', settle);
  });
}

void (async () => {
  // Connect in small waves so the server's accept queue never overflows.
  for (let i = 0; i < count; i += 100) {
    await Promise.all(Array.from({ length: Math.min(100, count - i) }, open));
  }
  parentPort.postMessage({ type: 'connected', connected: initial, failed });
  const started = Date.now();
  while (latencies.length < initial && Date.now() - started < timeoutMs) await new Promise((r) => setTimeout(r, 50));
  parentPort.postMessage({ type: 'done', latencies, connected: initial, failed });
  for (const ws of sockets) ws.terminate();
})();
