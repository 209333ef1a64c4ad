import cluster from 'node:cluster';
import { openApp } from './app.js';
import { superviseWorkers } from './cluster.js';
import { type Config, ConfigError, loadConfig } from './config.js';
import { InstanceLockError } from './lock.js';
import { createLogger } from './log.js';

let config: Config;
try {
  config = loadConfig();
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  console.error(err.message);
  process.exit(2);
}

// WORKERS > 1: this process only starts, replaces and stops the gateways (src/cluster.ts).
if (config.workers > 1 && cluster.isPrimary) process.exit(await superviseWorkers({ workers: config.workers, log: createLogger(config.logLevel) }));

const app = await openApp(config);
try {
  await app.start();
} catch (err) {
  // A refusal to start (a public HOST with no API keys, a DATA_DIR another server uses) is said
  // plainly, without a stack; each has its own exit code.
  if (!(err instanceof ConfigError) && !(err instanceof InstanceLockError)) throw err;
  console.error(err.message);
  await app.stop();
  process.exit(err instanceof InstanceLockError ? 3 : 2);
}

let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    app.stop().then(
      () => process.exit(0),
      (err) => {
        console.error(err);
        process.exit(1);
      },
    );
  });
}
