/** Stable, machine-readable codes for input a client can fix. */
export type InputErrorCode =
  | 'BAD_USER_INPUT'
  | 'IMAGE_FORMAT'
  | 'IMAGE_TOO_SMALL'
  | 'IMAGE_ASPECT_RATIO'
  | 'IMAGE_TOO_LARGE'
  | 'IMAGE_URL_INVALID'
  | 'IMAGE_URL_FORBIDDEN'
  | 'IMAGE_URL_UNRESOLVABLE'
  | 'WEBHOOK_URL_INVALID'
  | 'WEBHOOK_URL_FORBIDDEN'
  | 'WEBHOOK_URL_UNRESOLVABLE';

/** Thrown by validators; the schema turns it into a GraphQL error with `code` and `field`. */
export class InputError extends Error {
  constructor(
    readonly code: InputErrorCode,
    message: string,
    readonly field: string,
  ) {
    super(message);
    this.name = 'InputError';
  }
}
