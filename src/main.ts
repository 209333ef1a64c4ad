import cluster from 'node:cluster';
import os from 'node:os';
import { join } from 'node:path';
import { superviseWorkers } from './cluster.js';
import { type Config, ConfigError, loadConfig } from './config.js';
import { InstanceLockError } from './lock.js';
import { signalCounter } from './signals.js';
import { createLogger } from './log.js';

let config: Config;
try {
  config = loadConfig();
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  console.error(err.message);
  process.exit(2);
}

// WORKERS > 1: this process only starts, replaces and stops the gateways (src/cluster.ts), so it
// loads none of the gateway's modules (app.js is imported below, by the workers).
if (config.workers > 1 && cluster.isPrimary) {
  // Every worker opens DATA_DIR's SQLite file (kept files, incoming webhook ids), and on a new
  // DATA_DIR they would all migrate it at once: Drizzle's SQLite migrator reads what is applied
  // before it takes the write lock, so a second one would apply the first migration again and fail.
  // Migrated here, once, before any worker starts.
  const { openDatabase } = await import('./db/client.js');
  openDatabase(join(config.dataDir, 'cinegraph.sqlite')).$client.close();
  process.exit(await superviseWorkers({ workers: config.workers, log: createLogger(config.logLevel) }));
}

const { openApp } = await import('./app.js');
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

const log = createLogger(config.logLevel);
const signals = signalCounter();
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    const seen = signals();
    if (seen !== 'first') {
      // A copy of the first (see SAME_SIGNAL_MS) changes nothing. Nor does any repeat in a worker of
      // WORKERS, which hears Ctrl-C from the terminal and its primary's SIGTERM: the primary decides
      // when to stop waiting (src/cluster.ts).
      if (seen === 'copy' || cluster.isWorker) return;
      // Whoever sends a second signal will not wait for the stop, which can wait UPSTREAM_TIMEOUT_MS
      // for a submission's answer. Leaving now is as safe as a crash: a submission's intent is
      // durable before it is sent, and one whose answer never came is reconciled with upstream
      // at the next start.
      log.warn({ signal }, 'signal again: exiting without finishing the stop; unanswered submissions are reconciled with upstream at the next start');
      process.exit(128 + os.constants.signals[signal]);
    }
    if (!cluster.isWorker) log.info({ signal }, 'stopping: in-flight work lands first; a second SIGINT or SIGTERM, a second or more later, exits at once');
    app.stop().then(
      () => process.exit(0),
      (err) => {
        console.error(err);
        process.exit(1);
      },
    );
  });
}
