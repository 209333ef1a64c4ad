import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string): Logger {
  // The upstream key travels in Authorization headers; never let a logged object carry it.
  return pino({ level, redact: ['*.authorization', '*.headers.authorization', 'apiKey', '*.apiKey'] });
}
