/**
 * The CLI's exit codes, one per kind of trouble, so scripts can tell "start the server" from "fix
 * your input" from "the video failed". README.md's CLI section lists them.
 */
export const ExitCode = {
  ok: 0,
  /** An unexpected error (a bug: printed with its stack), or a `keys` command refused. */
  error: 1,
  /** Bad arguments or options, or a local file that cannot be read. */
  usage: 2,
  /** No cinegraph server answered at CINEGRAPH_URL (refused, timed out, or not a GraphQL answer). */
  unreachable: 3,
  /** The server refused the request; its `extensions.code` is shown (BAD_USER_INPUT, UNAUTHENTICATED, NOT_FOUND, …). */
  refused: 4,
  /** The prediction ended without a video (FAILED, or any final status but COMPLETED). */
  failed: 5,
  /** The prediction completed but its video could not be downloaded or written to --out. */
  download: 6,
} as const;

export type ExitKind = keyof typeof ExitCode;

/** A problem the user can act on: one line on stderr, and its exit code. */
export class CliError extends Error {
  constructor(
    readonly kind: Exclude<ExitKind, 'ok'>,
    message: string,
    /** The server's `extensions.code`, when it refused. */
    readonly code?: string,
  ) {
    super(message);
    this.name = 'CliError';
  }

  get exitCode(): number {
    return ExitCode[this.kind];
  }

  /** What `--json` prints on stdout for this error. */
  toJSON(): { error: { kind: string; code?: string; message: string } } {
    return { error: { kind: this.kind, ...(this.code ? { code: this.code } : {}), message: this.message } };
  }
}
