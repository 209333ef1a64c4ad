// Micro-benchmark of one broadcast's socket writes, the floor of the fan-out: N loopback WebSocket
// connections (clients in a child process pinned to CPU 1, reading and dropping), and a synchronous
// loop writing one `next` frame to each, timed on this process pinned to CPU 0. Contenders in
// alternating turns: ws's `send(string)` (what SocketFrames did until session 7) and one
// prebuilt-header buffer written to the raw socket (`textFrame`, what it does now).
// `npx tsx bench/ws-send.ts [N=10000] [turns=10]`.
import { spawn, spawnSync } from 'node:child_process';
import type { Duplex } from 'node:stream';
import { type WebSocket, WebSocketServer } from 'ws';
import { textFrame } from '../src/server/ws.js';

const N = Number(process.argv[2] ?? 10_000);
const TURNS = Number(process.argv[3] ?? 10);
spawnSync('taskset', ['-a', '-p', '-c', '0', String(process.pid)]);

const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
await new Promise<void>((r) => wss.on('listening', () => r()));
const { port } = wss.address() as { port: number };
const conns: Array<{ ws: WebSocket; raw: Duplex }> = [];
const all = new Promise<void>((resolve) =>
  wss.on('connection', (ws, req) => {
    conns.push({ ws, raw: req.socket });
    if (conns.length === N) resolve();
  }),
);
const clientSrc = `
const WebSocket = require('ws'); let got = 0;
for (let i = 0; i < ${N}; i++) { const c = new WebSocket('ws://127.0.0.1:${port}'); c.on('message', () => { got++; }); c.on('error', (e) => { console.error(e.message); process.exit(1); }); }
setInterval(() => process.send?.(got), 200);
`;
const client = spawn('taskset', ['-c', '1', process.execPath, '-e', clientSrc], { cwd: process.cwd(), stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
let received = 0;
client.on('message', (m) => (received = Number(m)));
await all;

const head = '{"id":"1","type":"next","payload":';
const payload = JSON.stringify({ data: { predictionUpdated: { id: '0193a3c2-7a1b-7cc4-9d43-1f1e5c6a2b3c', status: 'COMPLETED', outputs: ['http://127.0.0.1:4000/outputs/0193a3c2-7a1b-7cc4-9d43-1f1e5c6a2b3c/0.mp4'], error: null, updatedAt: '2026-11-29T14:00:00.000Z' } } });
const tail = Buffer.from(`${payload}}`);
const headBytes = Buffer.from(head);

const contenders = {
  'ws.send(string)': () => {
    for (const { ws } of conns) ws.send(`${head}${payload}}`);
  },
  'raw.write(textFrame)': () => {
    for (const { raw } of conns) raw.write(textFrame(headBytes, tail));
  },
};
const times: Record<string, number[]> = Object.fromEntries(Object.keys(contenders).map((name) => [name, []]));
let expected = 0;
for (let t = 0; t < TURNS; t++) {
  for (const [name, run] of Object.entries(contenders)) {
    const t0 = process.hrtime.bigint();
    run();
    times[name]?.push(Number(process.hrtime.bigint() - t0) / 1e6);
    expected += N;
    // Let the clients drain before the next contender, so neither pays for the other's backlog.
    while (received < expected) await new Promise((r) => setTimeout(r, 50));
  }
}
const fmt = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const median = s[Math.floor(s.length / 2)] ?? Number.NaN;
  return `median ${median.toFixed(1)} ms (${s[0]?.toFixed(1)}–${s.at(-1)?.toFixed(1)}), ${((median * 1000) / N).toFixed(2)} µs a socket`;
};
for (const [name, xs] of Object.entries(times)) console.log(`${name.padEnd(22)} ${N} sockets: ${fmt(xs)}`);
client.kill();
for (const { ws } of conns) ws.terminate();
wss.close();
