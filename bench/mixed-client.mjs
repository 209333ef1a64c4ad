// The mixed run's load generator, in its own process (pinned to the other core by bench/mixed.ts):
// CLIENTS graphql-ws clients, each creating a video over its socket and following it live to a final
// status, paced over RAMP_MS, plus READERS HTTP loops reading `prediction(id)` of ids already created.
// Plain JavaScript: it runs under plain node. Prints one JSON line with what it measured.
import WebSocket from 'ws';

const [url, clients, readers, rampMs, timeoutMs] = [process.argv[2], ...process.argv.slice(3).map(Number)];
const wsUrl = `${url.replace('http', 'ws')}/graphql`;
const CREATE = 'mutation($p: String!) { createVideo(input: { prompt: $p }) { id } }';
const WATCH = 'subscription($id: ID!) { predictionUpdated(id: $id) { status updatedAt } }';
const READ = 'query($id: ID!) { prediction(id: $id) { id status updatedAt queuePosition } }';

const latencies = [];
const ids = [];
let events = 0;
let finished = 0;
let failed = 0;
let reads = 0;
let readErrors = 0;
const sockets = [];

function follow(n) {
  return new Promise((resolve) => {
    const ws = new WebSocket(wsUrl, 'graphql-transport-ws', { perMessageDeflate: false });
    sockets.push(ws);
    let last = '';
    const end = (ok) => {
      if (ok) finished++;
      else failed++;
      ws.close();
      resolve();
    };
    ws.on('open', () => ws.send('{"type":"connection_init"}'));
    ws.on('message', (data) => {
      const receivedAt = Date.now();
      const msg = JSON.parse(String(data));
      if (msg.type === 'connection_ack') ws.send(JSON.stringify({ id: 'c', type: 'subscribe', payload: { query: CREATE, variables: { p: `mixed run ${n}` } } }));
      else if (msg.type === 'next' && msg.id === 'c') {
        const id = msg.payload.data?.createVideo?.id;
        if (!id) return end(false);
        ids.push(id);
        ws.send(JSON.stringify({ id: 'w', type: 'subscribe', payload: { query: WATCH, variables: { id } } }));
      } else if (msg.type === 'next' && msg.id === 'w') {
        const p = msg.payload.data?.predictionUpdated;
        if (!p) return end(false);
        events++;
        // The first message is the state at subscribe time. A later one with a new status is a write,
        // timed from it; one with the same status is a queue place moving (queuePosition is live, the
        // row unchanged, so its updatedAt is the last write's), not timed.
        if (last && p.status !== last) latencies.push(receivedAt - Date.parse(p.updatedAt));
        last = p.status;
        if (p.status === 'COMPLETED' || p.status === 'FAILED' || p.status === 'CANCELED') end(p.status === 'COMPLETED');
      } else if (msg.type === 'error') end(false);
    });
    ws.on('error', () => end(false));
  });
}

let running = true;
async function reader() {
  while (running) {
    const id = ids[Math.floor(Math.random() * ids.length)];
    if (!id) {
      await new Promise((r) => setTimeout(r, 20));
      continue;
    }
    try {
      const res = await fetch(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: READ, variables: { id } }) });
      const body = await res.json();
      if (body.errors) readErrors++;
      else reads++;
    } catch {
      readErrors++;
    }
  }
}

const started = Date.now();
const readLoops = Array.from({ length: readers }, reader);
const follows = [];
for (let i = 0; i < clients; i++) {
  follows.push(follow(i));
  const due = started + ((i + 1) * rampMs) / clients;
  if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
}
await Promise.race([Promise.all(follows), new Promise((r) => setTimeout(r, timeoutMs))]);
running = false;
await Promise.all(readLoops);
const seconds = (Date.now() - started) / 1000;
for (const ws of sockets) ws.terminate();
process.stdout.write(`${JSON.stringify({ latencies, events, finished, failed, reads, readErrors, seconds })}\n`);
process.exit(0);
