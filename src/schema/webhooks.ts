import { predictionStatuses, type PredictionStatus as Status, type WebhookAttemptRow } from '../db/schema.js';
import { checkWebhookUrl } from '../webhooks/target.js';
import { builder } from './builder.js';
import type { Context } from './context.js';
import { userError, validated } from './errors.js';
import { ownRow, Prediction, PredictionStatus } from './prediction.js';
import { markVolatile } from './volatile.js';

const MAX_DELIVERIES = 100;
/** The final statuses: what a client is told about when it names no events. */
export const DEFAULT_WEBHOOK_EVENTS: Status[] = ['COMPLETED', 'FAILED', 'CANCELED'];

type Delivery = WebhookAttemptRow & { event: Status; url: string; webhookId: string };

const WebhookDelivery = builder.objectRef<Delivery>('WebhookDelivery').implement({
  description: 'One attempt to POST a prediction event to its webhookUrl.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Pass it to redeliverWebhook to send the same message again.' }),
    webhookId: t.exposeString('webhookId', { description: 'The `webhook-id` header: the same for every attempt of one event, so a receiver can drop duplicates.' }),
    event: t.field({ type: PredictionStatus, description: 'The status this message reports.', resolve: (d) => d.event }),
    url: t.exposeString('url'),
    attemptedAt: t.expose('attemptedAt', { type: 'DateTime' }),
    statusCode: t.exposeInt('statusCode', { nullable: true, description: "The receiver's HTTP status; null when no answer came (refused, timed out, blocked)." }),
    latencyMs: t.exposeInt('latencyMs'),
    error: t.exposeString('error', { nullable: true, description: 'Why the attempt failed; null on success (2xx).', extensions: { cost: 2 } }),
    succeeded: t.boolean({ resolve: (d) => d.statusCode !== null && d.statusCode >= 200 && d.statusCode < 300 }),
    redelivery: t.exposeBoolean('manual', { description: 'Made by redeliverWebhook rather than by the retry schedule.' }),
  }),
});

builder.objectField(Prediction, 'webhookDeliveries', (t) =>
  t.field({
    type: [WebhookDelivery],
    description: `Attempts to deliver this prediction's webhook events, newest first (1 to ${MAX_DELIVERIES}); empty without a webhookUrl.`,
    args: { first: t.arg.int({ defaultValue: 20 }) },
    resolve: (p, { first }, ctx) => {
      // Attempts are logged without a recorded change of the prediction: an answer listing them must
      // not be kept by the response cache, or a client polling for a delivery would never see it.
      markVolatile(ctx);
      const n = first ?? 20;
      if (n < 1 || n > MAX_DELIVERIES) throw userError('BAD_USER_INPUT', `first must be between 1 and ${MAX_DELIVERIES}`, 'first');
      return ctx.webhooks.deliveries(p.id, n);
    },
  }),
);

builder.mutationField('redeliverWebhook', (t) =>
  t.field({
    type: WebhookDelivery,
    description:
      "Sends the message of one of your webhook deliveries again, now (same webhook-id and body, a fresh signature), and returns the new attempt. An unknown id, or another key's, is NOT_FOUND.",
    args: { deliveryId: t.arg.id({ required: true }) },
    resolve: async (_root, { deliveryId }, ctx) => {
      const id = String(deliveryId);
      const attempt = id.length <= 100 ? await ctx.webhooks.attempt(id) : undefined;
      if (!attempt || !ownRow(ctx, await ctx.store.findById(attempt.predictionId))) {
        throw userError('NOT_FOUND', `no webhook delivery with id "${id.slice(0, 100)}"`, 'deliveryId');
      }
      const sent = await ctx.webhooks.redeliver(id);
      const delivery = sent && (await ctx.webhooks.deliveries(attempt.predictionId, MAX_DELIVERIES)).find((d) => d.id === sent.id);
      if (!delivery) throw userError('NOT_FOUND', `no webhook delivery with id "${id}"`, 'deliveryId');
      return delivery;
    },
  }),
);

export interface WebhookInput {
  webhookUrl?: string | null;
  webhookEvents?: Status[] | null;
}

/** createVideo's webhook fields, checked before anything is stored; null when no webhook was asked for. */
export async function checkWebhookInput(ctx: Context, input: WebhookInput): Promise<{ url: string; events: Status[] } | null> {
  if (input.webhookUrl == null) {
    if (input.webhookEvents != null) throw userError('BAD_USER_INPUT', 'webhookEvents needs a webhookUrl', 'input.webhookEvents');
    return null;
  }
  if (ctx.webhooks.unavailable) throw userError('BAD_USER_INPUT', ctx.webhooks.unavailable, 'input.webhookUrl');
  const events = input.webhookEvents ?? DEFAULT_WEBHOOK_EVENTS;
  if (!events.length) throw userError('BAD_USER_INPUT', 'webhookEvents must name at least one status (or be left out for the final ones)', 'input.webhookEvents');
  const rawUrl = input.webhookUrl;
  const url = await validated(() => checkWebhookUrl(rawUrl, ctx.resolveHost, ctx.webhooks.allowPrivate));
  if (ctx.principal.owner === null && !ctx.webhooks.hasSecret(null)) {
    // Only with DATABASE_URL: open mode's secret is then WEBHOOK_SIGNING_SECRET, one for every instance.
    throw userError(
      'WEBHOOK_SECRET_MISSING',
      'open mode with DATABASE_URL signs webhooks with WEBHOOK_SIGNING_SECRET, which is not set; give every instance the same one',
      'input.webhookUrl',
    );
  }
  if (!ctx.webhooks.hasSecret(ctx.principal.owner)) {
    throw userError(
      'WEBHOOK_SECRET_MISSING',
      'this API key has no webhook signing secret (it predates webhooks); run `cinegraph keys rotate-webhook-secret NAME` to make one',
      'input.webhookUrl',
    );
  }
  // In a stable order, without repeats: the order events are listed in does not matter.
  const wanted = new Set(events);
  return { url: url.toString(), events: predictionStatuses.filter((s) => wanted.has(s)) };
}
