import { InputError } from './errors.js';
import { MAX_PROMPT_CHARS } from './limits.js';

/** Trimmed prompt, or an InputError. Length counts characters (code points), not UTF-16 units. */
export function checkPrompt(raw: string, field = 'input.prompt'): string {
  const prompt = raw.trim();
  if (!prompt) throw new InputError('BAD_USER_INPUT', 'prompt must not be blank', field);
  const chars = [...prompt].length;
  if (chars > MAX_PROMPT_CHARS) {
    throw new InputError('BAD_USER_INPUT', `prompt is ${chars} characters long; the limit is ${MAX_PROMPT_CHARS}`, field);
  }
  return prompt;
}
