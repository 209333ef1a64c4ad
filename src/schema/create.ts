import { MODEL } from '../upstream/wavespeed.js';
import { builder } from './builder.js';
import { userError } from './errors.js';
import { Prediction } from './prediction.js';

export const MAX_PROMPT_LENGTH = 2000;

const CreateVideoInput = builder.inputType('CreateVideoInput', {
  fields: (t) => ({
    prompt: t.string({ required: true, description: `What the video shows; 1 to ${MAX_PROMPT_LENGTH} characters after trimming.` }),
    image: t.string({
      description:
        'First frame: a data:image/jpeg|png;base64 URI or a public http(s) URL. JPG/PNG, aspect ratio between 2:5 and 5:2, short side over 300 px, at most 20 MB.',
    }),
    enablePromptExpansion: t.boolean({ defaultValue: true, description: 'Let the model rewrite the prompt for quality.' }),
  }),
});

builder.mutationField('createVideo', (t) =>
  t.field({
    type: Prediction,
    description: 'Accepts a video generation and returns it at once (status CREATED); it is submitted upstream in the background.',
    args: { input: t.arg({ type: CreateVideoInput, required: true }) },
    resolve: (_root, { input }, ctx) => {
      const prompt = input.prompt.trim();
      if (!prompt) throw userError('BAD_USER_INPUT', 'prompt must not be blank', 'input.prompt');
      if (prompt.length > MAX_PROMPT_LENGTH) {
        throw userError('BAD_USER_INPUT', `prompt is ${prompt.length} characters; the limit is ${MAX_PROMPT_LENGTH}`, 'input.prompt');
      }
      const now = ctx.now();
      const row = ctx.store.insert({
        id: ctx.newId(),
        model: MODEL,
        status: 'CREATED',
        prompt,
        image: input.image ?? null,
        hasImage: input.image != null,
        enablePromptExpansion: input.enablePromptExpansion ?? true,
        createdAt: now,
        updatedAt: now,
        nextPollAt: now,
      });
      ctx.wakePoller();
      return row;
    },
  }),
);
