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
      mkdirSync(config.dataDir, { recursive: true });
      console.log(openModeSecret(config.dataDir, config.webhooks.signingSecret));
    });
}
