import { MODEL } from '../upstream/wavespeed.js';
import { checkImage } from '../validation/image.js';
import { MAX_PROMPT_CHARS } from '../validation/limits.js';
import { checkPrompt } from '../validation/prompt.js';
import { builder } from './builder.js';
import { checkInFlight, fingerprint, idempotencyConflict, idempotencyKeyOf, MAX_IDEMPOTENCY_KEY_CHARS, replay, takeCreate, tooManyInFlight } from './admission.js';
import { stored, userError, validated } from './errors.js';

const MIN_DEADLINE_SECONDS = 1;
const MAX_DEADLINE_SECONDS = 24 * 3600;
import { Prediction, PredictionStatus } from './prediction.js';
import { checkWebhookInput } from './webhooks.js';

const CreateVideoInput = builder.inputType('CreateVideoInput', {
  fields: (t) => ({
    prompt: t.string({ required: true, description: `What the video shows; 1 to ${MAX_PROMPT_CHARS} characters after trimming.` }),
    image: t.string({
      description:
        'First frame: a data:image/jpeg|png;base64 URI or a public http(s) URL. JPEG or PNG by its real bytes, aspect ratio strictly between 2:5 and 5:2, short side over 300 px, at most 20 MiB decoded. A URL must resolve to public addresses only; the gateway never fetches it.',
    }),
    enablePromptExpansion: t.boolean({ defaultValue: true, description: 'Let the model rewrite the prompt for quality.' }),
    deadlineSeconds: t.int({
      description: `Cancel the prediction if it is not final this many seconds after creation (${MIN_DEADLINE_SECONDS} to ${MAX_DEADLINE_SECONDS}); it then ends CANCELED with an error saying so.`,
    }),
    webhookUrl: t.string({
      description:
        'Where the gateway POSTs the prediction as JSON when it reaches one of webhookEvents, signed per Standard Webhooks with your key\'s webhook secret (`cinegraph keys create` prints it). http(s), at most 2048 characters, public addresses only (unless WEBHOOK_ALLOW_PRIVATE); retried with exponential backoff for 24 h.',
    }),
    webhookEvents: t.field({
      type: [PredictionStatus],
      description: 'The statuses that are delivered to webhookUrl; default the final ones: COMPLETED, FAILED, CANCELED.',
    }),
    idempotencyKey: t.string({
      description: `Makes retries safe: another call with the same key and the same input within 24 hours returns the same prediction and submits nothing; with a different input it fails with IDEMPOTENCY_CONFLICT. Per API key; 1 to ${MAX_IDEMPOTENCY_KEY_CHARS} characters.`,
    }),
  }),
});

builder.mutationField('createVideo', (t) =>
  t.field({
    type: Prediction,
    description: 'Accepts a video generation and returns it at once (status CREATED); it is submitted upstream in the background.',
    args: { input: t.arg({ type: CreateVideoInput, required: true }) },
    resolve: async (_root, { input }, ctx) => {
      // Everything is checked before the insert: a refused request leaves no row and sends nothing.
      // A retry is answered before any quota is spent: it creates nothing.
      const idempotencyKey = idempotencyKeyOf(input);
      const inputHash = idempotencyKey === undefined ? '' : fingerprint(input);
      const earlier = idempotencyKey === undefined ? undefined : await replay(ctx, idempotencyKey, inputHash);
      if (earlier) return earlier;
      await checkInFlight(ctx);
      await takeCreate(ctx);
      const prompt = await validated(() => checkPrompt(input.prompt));
      const deadlineSeconds = input.deadlineSeconds ?? null;
      if (deadlineSeconds !== null && (deadlineSeconds < MIN_DEADLINE_SECONDS || deadlineSeconds > MAX_DEADLINE_SECONDS)) {
        throw userError('BAD_USER_INPUT', `deadlineSeconds must be between ${MIN_DEADLINE_SECONDS} and ${MAX_DEADLINE_SECONDS} (24 h)`, 'input.deadlineSeconds');
      }
      const imageInput = input.image;
      const image = imageInput == null ? null : await validated(() => checkImage(imageInput, ctx.resolveHost));
      const webhook = await checkWebhookInput(ctx, input);
      // A data URI becomes a file before the row exists (the row only names it): an insert that fails
      // leaves at most a file no row refers to (content-addressed: the same image sent again reuses it).
      const file = image?.startsWith('data:') ? stored(() => ctx.images.put(image)) : undefined;
      const now = ctx.now();
      // Checked again inside the store's transaction, where nothing can interleave: a twin request
      // may have landed during validation, or other creations used up the in-flight quota.
      const outcome = await stored(() =>
        ctx.creator.create(
          {
            row: {
              id: ctx.newId(),
              model: MODEL,
              status: 'CREATED',
              prompt,
              image: file ? null : image,
              imageFile: file?.name ?? null,
              hasImage: image !== null,
              enablePromptExpansion: input.enablePromptExpansion ?? true,
              createdAt: now,
              updatedAt: now,
              nextPollAt: now,
              owner: ctx.principal.owner,
              deadlineAt: deadlineSeconds === null ? null : new Date(now.getTime() + deadlineSeconds * 1000),
            },
            idempotency: idempotencyKey === undefined ? undefined : { key: idempotencyKey, inputHash },
            maxInFlight: ctx.quotas.maxInFlight(ctx.principal),
            withRow: webhook ? (created, tx) => ctx.webhooks.subscribe(created, webhook.url, webhook.events, tx) : undefined,
          },
          now,
        ),
      );
      if (outcome.kind === 'conflict') throw idempotencyConflict();
      if (outcome.kind === 'tooManyInFlight') throw tooManyInFlight(outcome.unfinished, outcome.max);
      if (outcome.kind === 'replayed') return outcome.row;
      const row = outcome.row;
      ctx.wakePoller();
      return row;
    },
  }),
);
