import { GraphQLError } from 'graphql';
import { InputError, type InputErrorCode } from '../validation/errors.js';

/** Stable, machine-readable error codes, carried in `extensions.code`. */
export type ErrorCode = InputErrorCode | 'NOT_FOUND';

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
