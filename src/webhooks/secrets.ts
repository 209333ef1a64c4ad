import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Standard Webhooks secrets: `whsec_` and 32 random bytes in base64, the form the `standardwebhooks` package takes. */
export function generateSigningSecret(): string {
  return `whsec_${randomBytes(32).toString('base64')}`;
}

/** Where open mode keeps its generated secret. */
export const OPEN_MODE_SECRET_FILE = 'webhook-secret';

/**
 * The secret that signs webhooks of predictions made in open mode: WEBHOOK_SIGNING_SECRET when
 * set, else the one in DATA_DIR/webhook-secret, generated (readable by this user only) on first use.
 * `cinegraph webhook-secret` prints the same value.
 */
export function openModeSecret(dataDir: string, configured?: string): string {
  if (configured) return configured;
  const file = join(dataDir, OPEN_MODE_SECRET_FILE);
  try {
    writeFileSync(file, `${generateSigningSecret()}\n`, { flag: 'wx', mode: 0o600 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return readFileSync(file, 'utf8').trim();
}
