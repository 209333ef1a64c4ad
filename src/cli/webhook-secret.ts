import { mkdirSync } from 'node:fs';
import type { Command } from 'commander';
import { loadConfig } from '../config.js';
import { openModeSecret } from '../webhooks/secrets.js';

/**
 * `cinegraph webhook-secret`: the secret that signs the webhooks of predictions made in open mode
 * (WEBHOOK_SIGNING_SECRET, or the one in DATA_DIR/webhook-secret, made now if there is none yet).
 */
export function registerWebhookSecret(program: Command): void {
  program
    .command('webhook-secret')
    .description("print open mode's webhook signing secret (WEBHOOK_SIGNING_SECRET, or the one generated into DATA_DIR); keys have their own")
    .action(() => {
      const config = loadConfig();
      if (config.scaleOut && !config.webhooks.signingSecret) {
        // With DATABASE_URL a secret generated into one DATA_DIR would sign nothing: open mode signs with this one only.
        console.error('with DATABASE_URL, open mode signs webhooks with WEBHOOK_SIGNING_SECRET (the same on every instance), which is not set');
        process.exitCode = 1;
        return;
      }
      mkdirSync(config.dataDir, { recursive: true });
      console.log(openModeSecret(config.dataDir, config.webhooks.signingSecret));
    });
}
