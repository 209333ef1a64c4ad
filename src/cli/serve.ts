import type { Command } from 'commander';

/** `cinegraph serve`: the server itself, exactly as `npm start` runs it (same variables, exit codes, signals). */
export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('run the gateway (as `npm start`): HOST, PORT, DATA_DIR and the rest from the environment')
    .action(async () => {
      // main.ts starts the server as it is imported and keeps the process alive until a signal.
      await import('../main.js');
    });
}
