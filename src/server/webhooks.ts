import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { PredictionStore } from '../db/predictions.js';

export const WEBHOOK_PREFIX = '/webhooks/wavespeed/';

export function webhookUrl(publicUrl: string, predictionId: string, token: string): string {
  return `${publicUrl}${WEBHOOK_PREFIX}${encodeURIComponent(predictionId)}?token=${token}`;
}

/**
 * Receives upstream's webhook for one prediction. The body is never trusted: a delivery with the
 * right token only makes the poller re-read the authoritative result upstream, so even a leaked
 * token cannot write a status. A wrong token or unknown id changes nothing.
 */
export function createWebhookHandler(store: PredictionStore, pollNow: (id: string) => void) {
  return (req: IncomingMessage, res: ServerResponse, url: URL): void => {
    req.resume(); // the payload is not read; drain it so the connection can be reused
    const reply = (status: number, message: string) => {
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ message }));
    };
    if (req.method !== 'POST') {
      reply(405, 'webhooks are POSTed');
      return;
    }
    const id = decodeURIComponent(url.pathname.slice(WEBHOOK_PREFIX.length));
    const row = store.findById(id);
    const token = url.searchParams.get('token') ?? '';
    if (!row?.webhookToken || !sameSecret(token, row.webhookToken)) {
      reply(404, 'no such webhook');
      return;
    }
    pollNow(id);
    reply(202, 'accepted');
  };
}

function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}
