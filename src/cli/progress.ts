import ora, { type Ora } from 'ora';
import type { Prediction } from './gateway.js';

/** How a followed prediction is shown while it runs; all of it goes to stderr. */
export interface Progress {
  /** A new state arrived. */
  update(p: Prediction): void;
  /** Prints a line on stdout without tearing the spinner. */
  print(line: string): void;
  /** The last state; the spinner (if any) ends with a ✔ or ✖ line. */
  stop(final?: Prediction): void;
}

/** ` (queue 3)` while the prediction waits for admission, else nothing. */
const queued = (p: Prediction) => (p.queuePosition ? ` (queue ${p.queuePosition})` : '');

export function formatElapsed(ms: number): string {
  const s = Math.max(0, ms) / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const whole = Math.floor(s);
  return `${Math.floor(whole / 60)} min ${String(whole % 60).padStart(2, '0')} s`;
}

/**
 * A spinner with the status and elapsed time when stderr is a terminal; one line per status change
 * when it is not (a log, a CI job); nothing at all under --json, whose stdout must stay parseable
 * and whose callers want no decoration on stderr either.
 * @param since when the clock starts (the command's start, or the prediction's creation).
 */
export function createProgress({ json, since, stream = process.stderr }: { json: boolean; since: () => number; stream?: NodeJS.WriteStream }): Progress {
  const print = (line: string) => void process.stdout.write(`${line}\n`);
  if (json) return { update() {}, print, stop() {} };
  const elapsed = () => formatElapsed(Date.now() - since());

  // A terminal that reports no width (a pty nobody sized) cannot be redrawn in place: lines instead.
  if (!stream.isTTY || !stream.columns) {
    let shown: string | undefined;
    return {
      update(p) {
        const state = `${p.status}${queued(p)}`;
        if (state === shown) return;
        shown = state;
        stream.write(`${p.id} ${state} after ${elapsed()}\n`);
      },
      print,
      stop() {},
    };
  }

  let current: Prediction | undefined;
  const text = () => (current ? `${current.status}${queued(current)} · ${elapsed()} · ${current.id}` : `connecting · ${elapsed()}`);
  // discardStdin off: a spinner has no business swallowing keys, and Ctrl-C must reach us.
  // isEnabled: the terminal test above already decided; ora's own guess also turns spinners off
  // whenever a CI variable is set, even on a real terminal.
  const spinner: Ora = ora({ text: text(), stream, discardStdin: false, isEnabled: true }).start();
  // ora redraws the frame on its own; the elapsed time in the text is ours to refresh.
  const tick = setInterval(() => (spinner.text = text()), 100);
  tick.unref();
  return {
    update(p) {
      current = p;
      spinner.text = text();
    },
    print(line) {
      spinner.clear();
      print(line);
      spinner.render();
    },
    stop(final) {
      clearInterval(tick);
      if (final?.status === 'COMPLETED') spinner.succeed(`COMPLETED in ${elapsed()} · ${final.id}`);
      else if (final) spinner.fail(`${final.status} after ${elapsed()} · ${final.id}${final.error ? `: ${final.error}` : ''}`);
      else spinner.stop();
    },
  };
}
