import { Command, CommanderError } from 'commander';
import { KeyError } from '../auth/keys.js';
import { ConfigError } from '../config.js';
import { CliError, ExitCode } from './exit.js';
import { registerKeys } from './keys.js';
import { registerPredictions } from './predictions.js';
import { registerServe } from './serve.js';
import { registerWebhookSecret } from './webhook-secret.js';

/**
 * The `cinegraph` command. Each command group lives in its own file and registers itself here;
 * commands that talk to a running server find it through CINEGRAPH_URL and CINEGRAPH_API_KEY.
 */
export function buildProgram(): Command {
  // exitOverride before the groups register: their commands inherit it, so usage errors reach the catch below.
  const program = new Command('cinegraph').description('cinegraph: a GraphQL gateway for AI video generation').showHelpAfterError().exitOverride();
  registerServe(program);
  registerPredictions(program);
  registerKeys(program);
  registerWebhookSecret(program);
  return program;
}

try {
  await buildProgram().parseAsync(process.argv);
} catch (err) {
  // Problems the user can fix are one line on stderr; anything else is a bug and keeps its stack.
  if (err instanceof CliError) {
    console.error(`cinegraph: ${err.message}`);
    process.exit(err.exitCode);
  }
  if (err instanceof KeyError || err instanceof ConfigError) {
    console.error(`cinegraph: ${err.message}`);
    process.exit(ExitCode.error);
  }
  // Help and --version exit 0; commander has already printed what was wrong with the arguments.
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : ExitCode.usage);
  throw err;
}
