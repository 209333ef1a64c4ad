import { createHash } from 'node:crypto';
import { GraphQLError } from 'graphql';
import type { PredictionRow } from '../db/schema.js';
import type { Context } from './context.js';
import { userError, type ErrorCode } from './errors.js';

/** Longest idempotency key accepted; a UUID or a request hash fits many times over. */
export const MAX_IDEMPOTENCY_KEY_CHARS = 200;

export interface RawCreateInput {
  prompt: string;
  image?: string | null;
  enablePromptExpansion?: boolean | null;
  deadlineSeconds?: number | null;
  idempotencyKey?: string | null;
  webhookUrl?: string | null;
  webhookEvents?: readonly string[] | null;
}

function quotaError(code: ErrorCode, message: string, status: number, extensions: Record<string, unknown> = {}, headers?: Record<string, string>) {
  return new GraphQLError(message, { extensions: { code, ...extensions, http: { status, ...(headers ? { headers } : {}) } } });
}

/** The idempotency key as given, or undefined; a blank or huge one is refused. */
export function idempotencyKeyOf(input: RawCreateInput): string | undefined {
  const key = input.idempotencyKey;
  if (key == null) return undefined;
  if (key.trim() === '' || key.length > MAX_IDEMPOTENCY_KEY_CHARS) {
    throw userError('BAD_USER_INPUT', `idempotencyKey must be 1 to ${MAX_IDEMPOTENCY_KEY_CHARS} characters, not blank`, 'input.idempotencyKey');
  }
  return key;
}

/** What makes two requests "the same input": every input field as sent, defaults applied. */
export function fingerprint(input: RawCreateInput): string {
  // A deadline is part of what was asked for; absent, the fingerprint is what it was before deadlines existed.
  const deadline = input.deadlineSeconds == null ? [] : [input.deadlineSeconds];
  // Likewise a webhook: absent, the fingerprint stays what it was before webhooks existed.
  const webhook = input.webhookUrl == null ? [] : [input.webhookUrl, input.webhookEvents ?? null];
  const canonical = JSON.stringify([input.prompt, input.image ?? null, input.enablePromptExpansion ?? true, ...deadline, ...webhook]);
  return createHash('sha256').update(canonical).digest('hex');
}

/** The key was used with a different input within the TTL. */
export const idempotencyConflict = () =>
  quotaError('IDEMPOTENCY_CONFLICT', 'this idempotencyKey was used with a different input in the last 24 hours', 409, { field: 'input.idempotencyKey' });

export const tooManyInFlight = (unfinished: number, max: number) =>
  quotaError('TOO_MANY_IN_FLIGHT', `this key already has ${unfinished} unfinished predictions (at most ${max}); wait for one to complete or fail`, 429, { limit: max });

/**
 * The prediction an earlier call with this idempotency key created, when the input is the same;
 * IDEMPOTENCY_CONFLICT when it is not; undefined when the key is new (or expired).
 */
export async function replay(ctx: Context, key: string, inputHash: string): Promise<PredictionRow | undefined> {
  const earlier = await ctx.idempotency.find(ctx.principal.owner, key, ctx.now());
  if (!earlier) return undefined;
  if (earlier.inputHash !== inputHash) throw idempotencyConflict();
  const row = await ctx.store.findById(earlier.predictionId);
  return row && row.owner === ctx.principal.owner ? row : undefined;
}

/** TOO_MANY_IN_FLIGHT when the caller's key already has its most unfinished predictions. */
export async function checkInFlight(ctx: Context): Promise<void> {
  const max = ctx.quotas.maxInFlight(ctx.principal);
  if (max === undefined) return;
  const unfinished = await ctx.store.countUnfinished(ctx.principal.owner);
  if (unfinished >= max) throw tooManyInFlight(unfinished, max);
}

/** RATE_LIMITED, with `retryAfter` in seconds, when the caller's key has used its createVideo calls for the minute. */
export async function takeCreate(ctx: Context): Promise<void> {
  const retryAfter = await ctx.quotas.takeCreate(ctx.principal);
  if (retryAfter !== undefined) {
    throw quotaError('RATE_LIMITED', `too many createVideo calls for this key; retry in ${retryAfter} s`, 429, { retryAfter }, { 'retry-after': String(retryAfter) });
  }
}
