// One worker thread's share of the fan-out subscriptions (`perSocket` on each socket): raw
// graphql-transport-ws over `ws`, so the client side costs as little as possible and the server dominates what is measured.
// Plain JavaScript: worker threads on Node 20 do not inherit tsx's loader.
import { parentPort, workerData } from 'node:worker_threads';
import WebSocket from 'ws';

const { url, id, count, perSocket = 1, finalStatus, timeoutMs } = workerData;
const query = 'subscription($id: ID!) { predictionUpdated(id: $id) { status updatedAt } }';
const latencies = [];
/** When the final status was written (its updatedAt), and when this thread received its last copy. */
let eventAt = 0;
let lastAt = 0;
let initial = 0;
let failed = 0;
const sockets = [];

/** One socket carrying `k` subscriptions of the prediction (ids 1..k); resolves once each has its first message. */
function open(k) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, 'graphql-transport-ws', { perMessageDeflate: false });
    sockets.push(ws);
    let waiting = k;
    const firstSeen = new Set();
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
      if (msg.type === 'connection_ack') {
        for (let i = 1; i <= k; i++) ws.send(JSON.stringify({ id: String(i), type: 'subscribe', payload: { query, variables: { id } } }));
      } else if (msg.type === 'next') {
        const p = msg.payload.data.predictionUpdated;
        if (p.status === finalStatus) {
          eventAt = Date.parse(p.updatedAt);
          lastAt = Math.max(lastAt, receivedAt);
          latencies.push(receivedAt - eventAt);
        }
        else if (!firstSeen.has(msg.id)) {
          firstSeen.add(msg.id);
          initial++;
          if (--waiting === 0) settle();
        }
      }
    });
    ws.on('error', () => {
      failed += waiting;
      settle();
    });
    ws.on('close', settle);
  });
}

void (async () => {
  // Connect in small waves so the server's accept queue never overflows.
  for (let i = 0; i < count; i += 100 * perSocket) {
    const subs = Math.min(100 * perSocket, count - i);
    await Promise.all(Array.from({ length: Math.ceil(subs / perSocket) }, (_, j) => open(Math.min(perSocket, subs - j * perSocket))));
  }
  parentPort.postMessage({ type: 'connected', connected: initial, failed });
  const started = Date.now();
  while (latencies.length < initial && Date.now() - started < timeoutMs) await new Promise((r) => setTimeout(r, 50));
  parentPort.postMessage({ type: 'done', latencies, connected: initial, failed, eventAt, lastAt });
  for (const ws of sockets) ws.terminate();
})();
