// One worker thread's share of the fan-out subscriptions (`perSocket` on each socket): raw
// graphql-transport-ws over `ws`, so the client side costs as little as possible and the server dominates what is measured.
// Plain JavaScript: worker threads on Node 20 do not inherit tsx's loader.
import { parentPort, workerData } from 'node:worker_threads';
import WebSocket from 'ws';

const { url, id, count, perSocket = 1, finalStatus, timeoutMs } = workerData;
const query = 'subscription($id: ID!) { predictionUpdated(id: $id) { status updatedAt } }';
/**
 * Copies of the final status as they arrived: their receive time and raw bytes, parsed only after
 * the round. During the broadcast this thread does as little as it can per message (ws's framing, a
 * byte search, a push), so that the clients' core does not pace what is measured.
 */
const arrivals = [];
let finals = 0;
const FINAL = Buffer.from(`"status":"${finalStatus}"`);
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
      if (waiting === 0) {
        // Connected: only the final status matters now (graphql-ws's `complete` frames follow it).
        if (data.includes(FINAL)) {
          // A copy: ws may hand out a slice of a larger read buffer, which 10,000 slices would all keep.
          arrivals.push(receivedAt, Buffer.from(data));
          finals++;
        }
        return;
      }
      const msg = JSON.parse(String(data));
      if (msg.type === 'connection_ack') {
        for (let i = 1; i <= k; i++) ws.send(JSON.stringify({ id: String(i), type: 'subscribe', payload: { query, variables: { id } } }));
      } else if (msg.type === 'next') {
        const p = msg.payload.data.predictionUpdated;
        if (p.status === finalStatus) {
          arrivals.push(receivedAt, Buffer.from(data));
          finals++;
        } else if (!firstSeen.has(msg.id)) {
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
  while (finals < initial && Date.now() - started < timeoutMs) await new Promise((r) => setTimeout(r, 50));
  /** When the final status was written (its updatedAt), and when this thread received its last copy. */
  let eventAt = 0;
  let lastAt = 0;
  const latencies = [];
  for (let i = 0; i < arrivals.length; i += 2) {
    const receivedAt = arrivals[i];
    eventAt = Date.parse(JSON.parse(String(arrivals[i + 1])).payload.data.predictionUpdated.updatedAt);
    lastAt = Math.max(lastAt, receivedAt);
    latencies.push(receivedAt - eventAt);
  }
  parentPort.postMessage({ type: 'done', latencies, connected: initial, failed, eventAt, lastAt });
  for (const ws of sockets) ws.terminate();
})();
