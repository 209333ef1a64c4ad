const disposers: Array<() => unknown> = [];

/** Registers cleanup that runs after the current test, newest first. */
export function onDispose(fn: () => unknown): void {
  disposers.push(fn);
}

export async function drainDisposers(): Promise<void> {
  while (disposers.length) await disposers.pop()?.();
}
