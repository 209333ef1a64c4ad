import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Predictions } from '../db/store.js';
import { verifyUpstreamDelivery, type UpstreamSecret } from '../webhooks/incoming.js';
import { readBody } from '../http-helpers.js';
import { sendJson } from './json.js';

export const WEBHOOK_PREFIX = '/webhooks/wavespeed/';

/** Largest delivery body read: a prediction record is a few KB. */
const MAX_BODY_BYTES = 256 * 1024;

export function webhookUrl(publicUrl: string, predictionId: string, token: string): string {
  return `${publicUrl}${WEBHOOK_PREFIX}${encodeURIComponent(predictionId)}?token=${token}`;
}

export interface WebhookHandlerOptions {
  store: Predictions;
  /** Makes the poller read the prediction upstream soon. */
  pollNow: (id: string) => void;
  /** The account's webhook secret, from upstream. */
  secret: UpstreamSecret;
  /** Remembers a delivery's `webhook-id`; false when it was seen before. */
  firstDelivery: (webhookId: string) => boolean;
  now: () => Date;
}

/**
 * Receives upstream's webhook for one prediction. A delivery must carry upstream's signature
 * (checked against the account's secret, within 5 minutes of its timestamp: 401 otherwise), this
 * prediction's URL token (404 otherwise) and a `webhook-id` not seen before (a duplicate is
 * acknowledged and dropped). Even then the body is not trusted: the delivery only makes the
 * poller re-read the authoritative result upstream. A refused delivery changes nothing.
 */
export function createWebhookHandler(o: WebhookHandlerOptions) {
  const handle = async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> => {
    const reply = (status: number, message: string) => {
      sendJson(res, status, { message });
    };
    if (req.method !== 'POST') {
      req.resume(); // drain, so the connection can be reused
      reply(405, 'webhooks are POSTed');
      return;
    }
    let body: Buffer;
    try {
      body = await readBody(req, MAX_BODY_BYTES);
    } catch {
      reply(413, `a delivery is at most ${MAX_BODY_BYTES} bytes`);
      return;
    }
    const headers = {
      id: header(req, 'webhook-id'),
      timestamp: header(req, 'webhook-timestamp'),
      signature: header(req, 'webhook-signature'),
    };
    const secret = await o.secret.get();
    if (secret === undefined) {
      reply(503, 'the webhook secret could not be fetched from upstream; deliveries cannot be verified right now');
      return;
    }
    let verdict = verifyUpstreamDelivery(secret, headers, body, o.now());
    if (!verdict.ok && verdict.reason === 'no valid signature') {
      // Upstream may have rotated the secret: fetch it again (at most once a minute) and retry.
      const fresh = await o.secret.refresh();
      if (fresh !== undefined && fresh !== secret) verdict = verifyUpstreamDelivery(fresh, headers, body, o.now());
    }
    if (!verdict.ok) {
      req.log.warn({ reason: verdict.reason }, 'refused an unverified webhook delivery');
      reply(401, `delivery not verified: ${verdict.reason}`);
      return;
    }
    const id = decodeURIComponent(url.pathname.slice(WEBHOOK_PREFIX.length));
    const row = await o.store.findById(id);
    const token = url.searchParams.get('token') ?? '';
    if (!row?.webhookToken || !sameSecret(token, row.webhookToken)) {
      reply(404, 'no such webhook');
      return;
    }
    if (!o.firstDelivery(headers.id as string)) {
      reply(200, 'duplicate delivery: already acted on');
      return;
    }
    o.pollNow(id);
    reply(202, 'accepted');
  };
  return (req: IncomingMessage, res: ServerResponse, url: URL): void => {
    handle(req, res, url).catch((err: unknown) => {
      // A storage failure, say: upstream retries a delivery that was not acknowledged.
      req.log.error({ err }, 'handling a webhook delivery failed');
      if (!res.headersSent) sendJson(res, 500, { message: 'internal error' });
    });
  };
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(' ') : v;
}

function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

