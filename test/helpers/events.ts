import type { PollerEvents } from '../../src/poller/events.js';
import type { Poller } from '../../src/poller/poller.js';

/**
 * The next `name` event of the poller whose payload passes `ok`, awaited instead of a sleep.
 * Listen before causing the event. Fails after `timeoutMs` with the event it waited for.
 */
export function nextPollerEvent<K extends keyof PollerEvents>(
  poller: Poller,
  name: K,
  ok: (...args: PollerEvents[K]) => boolean = () => true,
  timeoutMs = 20_000,
): Promise<PollerEvents[K]> {
  return new Promise((resolve, reject) => {
    const listener = (...args: PollerEvents[K]) => {
      if (!ok(...args)) return;
      done();
      resolve(args);
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`no '${name}' event from the poller within ${timeoutMs} ms`));
    }, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      poller.off(name, listener as never);
    };
    poller.on(name, listener as never);
  });
}
