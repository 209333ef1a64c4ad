import { GraphQLError } from 'graphql';

/** Stable, machine-readable error codes, carried in `extensions.code`. */
export type ErrorCode = 'BAD_USER_INPUT' | 'NOT_FOUND';

/** An error a client caused and can fix: its `code` and offending `field` ride in the extensions. */
export function userError(code: ErrorCode, message: string, field?: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code, ...(field ? { field } : {}) } });
}

export function notFound(id: string): GraphQLError {
  return userError('NOT_FOUND', `no prediction with id "${id}"`, 'id');
}
