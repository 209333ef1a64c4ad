import cluster, { type Worker } from 'node:cluster';
import os from 'node:os';
import type { Logger } from './log.js';
import { signalCounter } from './signals.js';

/**
 * Exit codes with which a gateway refuses to start (main.ts): a configuration it will not run with
 * (2) or a DATA_DIR another server holds (3). A replacement would refuse the same way.
 */
const REFUSALS = new Set([2, 3]);
/** A worker that ran this long was healthy: the next replacement waits only the first delay again. */
const HEALTHY_MS = 30_000;
/** The longest wait before replacing a worker that keeps dying young. */
const MAX_RESTART_DELAY_MS = 30_000;
/** How long a stop waits for workers to finish theirs (leases released, sockets closed) before killing them. */
const STOP_GRACE_MS = 30_000;

export interface SupervisorOptions {
  workers: number;
  log: Logger;
  /** Wait before replacing a worker that died; doubles while replacements keep dying young. */
  restartDelayMs?: number;
}

/**
 * WORKERS > 1: this process is the primary of a node:cluster and runs no gateway itself. It starts
 * `workers` gateway processes that share HOST:PORT (the primary accepts each connection and hands
 * it to the next worker in turn), replaces one that dies, and on SIGTERM or SIGINT stops them all.
 *
 * Why processes: one Node thread writes every socket it holds, and a broadcast to 10,000
 * subscribers is ~10,000 write system calls, the floor of the fan-out (BENCHMARKS.md, issue 18);
 * workers spread sockets and requests over the machine's cores. Each worker is a full instance of the
 * scale-out (README, Scale-out): Postgres holds the work and its leases, the bus carries each change
 * to the workers whose sockets watch it. So WORKERS > 1 needs DATABASE_URL (config.ts says so).
 *
 * @returns the primary's exit code: 0 once a requested stop is over and every worker exited cleanly
 * (1 if one did not); a worker's refusal code (2 or 3), after stopping the others, when one refused
 * to start.
 */
export function superviseWorkers({ workers, log, restartDelayMs = 1000 }: SupervisorOptions): Promise<number> {
  return new Promise((resolve) => {
    const live = new Map<Worker, number>();
    const timers = new Set<NodeJS.Timeout>();
    let stopping = false;
    let exitCode = 0;
    let nextDelay = restartDelayMs;

    const fork = () => {
      const worker = cluster.fork();
      live.set(worker, Date.now());
      // A failed message to or from the worker; without a listener it would throw in the primary.
      worker.on('error', (err) => log.error({ err, worker: worker.process.pid }, 'worker channel error'));
      log.info({ worker: worker.process.pid }, 'worker started');
    };

    const stop = (code: number) => {
      if (stopping) return;
      stopping = true;
      exitCode = code;
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      if (!live.size) return resolve(exitCode);
      log.info({ workers: live.size }, 'stopping workers');
      for (const worker of live.keys()) worker.process.kill('SIGTERM');
      // A worker that cannot finish its stop must not keep the primary (and the port) forever.
      setTimeout(() => {
        for (const worker of live.keys()) worker.process.kill('SIGKILL');
      }, STOP_GRACE_MS).unref();
    };

    cluster.on('exit', (worker, code, signal) => {
      const startedAt = live.get(worker) ?? Date.now();
      live.delete(worker);
      if (stopping) {
        // Ended by the stop's own signal (a worker still starting has no handler yet): a clean stop too.
        const stopped = code === 0 || signal === 'SIGTERM' || signal === 'SIGINT';
        if (!stopped) exitCode ||= 1;
        if (!live.size) resolve(exitCode);
        return;
      }
      if (code !== null && REFUSALS.has(code)) {
        log.error({ worker: worker.process.pid, code }, 'worker refused to start; stopping the others');
        stop(code);
        return;
      }
      const delay = Date.now() - startedAt >= HEALTHY_MS ? restartDelayMs : nextDelay;
      nextDelay = Math.min(delay * 2, MAX_RESTART_DELAY_MS);
      log.error({ worker: worker.process.pid, code, signal, restartInMs: delay }, 'worker exited; starting another');
      const timer = setTimeout(() => {
        timers.delete(timer);
        fork();
      }, delay);
      timers.add(timer);
    });

    const signals = signalCounter();
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      process.on(signal, () => {
        const seen = signals();
        // The first signal stops the workers (or, if a refusal already began that, changes nothing);
        // a copy of it (see SAME_SIGNAL_MS) changes nothing either.
        if (seen === 'first') return stop(0);
        if (seen === 'copy' || !live.size) return;
        // A second signal: whoever sent it will not wait for the workers' stops (one may be waiting
        // UPSTREAM_TIMEOUT_MS for a submission's answer). Killed now, each is as after a crash: its
        // submissions' intents are durable, and unanswered ones are reconciled with upstream by the
        // instance that takes their rows once their leases run out. (The workers ignore repeated
        // signals themselves: on Ctrl-C each hears the terminal's SIGINT and this primary's SIGTERM.)
        log.warn({ signal, workers: live.size }, 'signal again: killing the workers without waiting for their stop');
        // A worker's refusal, if that is what began the stop, stays the exit code: it says why.
        if (!REFUSALS.has(exitCode)) exitCode = 128 + os.constants.signals[signal];
        for (const worker of live.keys()) worker.process.kill('SIGKILL');
      });
    }
    log.info({ workers }, 'starting workers');
    for (let i = 0; i < workers; i++) fork();
  });
}
