import { Command, CommanderError } from 'commander';
import { KeyError } from '../auth/keys.js';
import { ConfigError } from '../config.js';
import { registerKeys } from './keys.js';

/**
 * The `cinegraph` command. Each command group lives in its own file and registers itself here;
 * commands that talk to a running server find it through CINEGRAPH_URL and CINEGRAPH_API_KEY.
 */
export function buildProgram(): Command {
  const program = new Command('cinegraph').description('cinegraph: a GraphQL gateway for AI video generation').showHelpAfterError();
  registerKeys(program);
  return program;
}

try {
  await buildProgram().parseAsync(process.argv);
} catch (err) {
  // Problems the user can fix are one line on stderr; anything else is a bug and keeps its stack.
  if (err instanceof KeyError || err instanceof ConfigError) {
    console.error(`cinegraph: ${err.message}`);
    process.exit(1);
  }
  if (err instanceof CommanderError) process.exit(err.exitCode);
  throw err;
}
