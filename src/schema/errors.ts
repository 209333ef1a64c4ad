import { GraphQLError } from 'graphql';
import { isStorageError } from '../db/errors.js';
import { InputError, type InputErrorCode } from '../validation/errors.js';

/** Stable, machine-readable error codes, carried in `extensions.code`. */
export type ErrorCode = InputErrorCode | 'NOT_FOUND' | 'STORAGE_UNAVAILABLE' | 'RATE_LIMITED' | 'TOO_MANY_IN_FLIGHT' | 'IDEMPOTENCY_CONFLICT' | 'ALREADY_FINAL' | 'WEBHOOK_SECRET_MISSING';

/** An error a client caused and can fix: its `code` and offending `field` ride in the extensions. */
export function userError(code: ErrorCode, message: string, field?: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code, ...(field ? { field } : {}) } });
}

export function notFound(id: string): GraphQLError {
  return userError('NOT_FOUND', `no prediction with id "${id}"`, 'id');
}

/** Runs a validator, turning its InputError into the GraphQL error clients see. */
export async function validated<T>(check: () => T | Promise<T>): Promise<T> {
  try {
    return await check();
  } catch (err) {
    if (err instanceof InputError) throw userError(err.code, err.message, err.field);
    throw err;
  }
}

/**
 * Runs a write for a resolver. A store that cannot write answers STORAGE_UNAVAILABLE (HTTP 503)
 * and the client gets no id: an id is only ever returned for a row that committed.
 */
export function stored<T>(write: () => T, refusal = 'the gateway cannot store new predictions right now; nothing was created, try again later'): T {
  const refuse = (err: unknown): never => refuseOnStorageError(err, refusal);
  try {
    const result = write();
    // An async write (a cancel that also calls upstream) fails later: map its storage errors too.
    if (result instanceof Promise) return result.catch(refuse) as T;
    return result;
  } catch (err) {
    return refuse(err);
  }
}

function refuseOnStorageError(err: unknown, message: string): never {
  if (!isStorageError(err)) throw err;
  throw new GraphQLError(message, {
    // No originalError: yoga masks any error that carries a non-GraphQL one as "Unexpected error".
    extensions: { code: 'STORAGE_UNAVAILABLE', http: { status: 503 } },
  });
}
