import { resolve } from 'node:path';
import { z } from 'zod';
import type { QuotaSettings } from './auth/quotas.js';
import type { SandboxFaults } from './upstream/sandbox-faults.js';

const int = (min: number, fallback: number) => z.coerce.number().int().min(min).default(fallback);
const num = (min: number, fallback: number) => z.coerce.number().min(min).default(fallback);
const rate = (fallback = 0) => num(0, fallback).pipe(z.number().max(1));
const bool = (fallback: boolean) =>
  z
    .enum(['true', 'false', '1', '0', 'yes', 'no'])
    .optional()
    .transform((v) => (v === undefined ? fallback : ['true', '1', 'yes'].includes(v)));
/** Unset or empty: no limit. */
const optionalPositiveInt = z
  .string()
  .optional()
  .transform((v) => (v === undefined || v.trim() === '' ? undefined : v.trim()))
  .pipe(z.coerce.number().int().min(1).optional());
const optionalString = z
  .string()
  .optional()
  .transform((v) => (v === undefined || v.trim() === '' ? undefined : v.trim()));

/** More processes than this on one machine is a mistake, not a deployment (WORKERS). */
export const MAX_WORKERS = 64;

/** Every environment variable cinegraph reads; the README's configuration table mirrors this. */
const envSchema = z.object({
  HOST: z.string().min(1).default('127.0.0.1'),
  PORT: int(0, 4000).pipe(z.number().max(65535)),
  DATA_DIR: z.string().min(1).default('./data'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  WAVESPEED_API_KEY: optionalString,
  WAVESPEED_BASE_URL: optionalString.pipe(z.string().url().optional()),
  PUBLIC_URL: optionalString.pipe(z.string().url().optional()).superRefine(checkPublicUrl),
  UPSTREAM_TIMEOUT_MS: int(100, 15_000),
  SANDBOX_TASK_SECONDS: num(0, 8),
  SANDBOX_FAILURE_RATE: rate(),
  SANDBOX_HANG_RATE: rate(),
  SANDBOX_ERROR_RATE: rate(),
  SANDBOX_RATE_LIMIT_RATE: rate(),
  SANDBOX_RATE_LIMIT_SECONDS: num(0, 1),
  SANDBOX_SLOW_RATE: rate(),
  SANDBOX_SLOW_MS: int(0, 30_000),
  SANDBOX_MALFORMED_RATE: rate(),
  SANDBOX_ACCEPT_THEN_STALL_RATE: rate(),
  SANDBOX_ACCEPT_THEN_ERROR_RATE: rate(),
  SANDBOX_UNAUTHORIZED_SECONDS: num(0, 0),
  POLL_INITIAL_MS: int(10, 5_000),
  POLL_GROWTH: num(0, 0.2),
  POLL_MAX_MS: int(10, 30_000),
  POLL_WEBHOOK_FALLBACK_MS: int(10, 120_000),
  POLL_CONCURRENCY: int(1, 16),
  MAX_PREDICTION_AGE_SECONDS: int(1, 3600),
  RETRY_AFTER_MAX_MS: int(0, 60_000),
  UPSTREAM_MAX_CONCURRENT: optionalPositiveInt,
  UPSTREAM_MAX_PER_MINUTE: optionalPositiveInt,
  RETENTION_DAYS: int(0, 30),
  MAX_SUBMISSIONS_PER_PREDICTION: int(1, 3),
  SUBMIT_RECONCILE_GRACE_MS: int(0, 60_000),
  KEEP_OUTPUTS: bool(true),
  RESPONSE_CACHE: bool(true),
  MEDIA_MAX_BYTES: int(1, 512 * 1024 * 1024),
  CORS_ORIGINS: z.string().optional().transform((v, ctx) => parseOrigins(v ?? '', ctx)),
  KEY_CREATES_PER_MINUTE: int(1, 30),
  KEY_MAX_IN_FLIGHT: int(1, 20),
  MAX_SUBSCRIPTIONS_PER_SOCKET: int(1, 100),
  MAX_SOCKETS_PER_KEY: int(1, 50),
  METRICS_TOKEN: optionalString.pipe(z.string().min(16, 'must be at least 16 characters').optional()),
  WEBHOOK_ALLOW_PRIVATE: bool(false),
  WEBHOOK_SIGNING_SECRET: optionalString.pipe(z.string().regex(/^whsec_[A-Za-z0-9+/]{32,}={0,2}$/, 'must be whsec_ followed by at least 24 bytes of base64').optional()),
  WEBHOOK_RETRY_BASE_MS: int(10, 5_000),
  WEBHOOK_TIMEOUT_MS: int(100, 10_000),
  DATABASE_URL: optionalString.pipe(z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// (or postgresql://) URL').optional()),
  REDIS_URL: optionalString.pipe(z.string().regex(/^rediss?:\/\//, 'must be a redis:// (or rediss://) URL').optional()),
  LEASE_MS: int(1000, 60_000),
  SUBSCRIPTION_RESYNC_MS: int(0, 30_000),
  WORKERS: int(1, 1).pipe(z.number().max(MAX_WORKERS)),
})
  .refine((e) => e.POLL_INITIAL_MS <= e.POLL_MAX_MS, { message: 'must not exceed POLL_MAX_MS', path: ['POLL_INITIAL_MS'] })
  // A lease must outlive any one upstream request, or a slow answer would be written by nobody.
  // (Only leases matter: without DATABASE_URL there are none, and a long UPSTREAM_TIMEOUT_MS is fine.)
  .refine((e) => !e.DATABASE_URL || e.LEASE_MS > e.UPSTREAM_TIMEOUT_MS, { message: 'must be longer than UPSTREAM_TIMEOUT_MS', path: ['LEASE_MS'] })
  // On SQLite one process owns DATA_DIR (its poller is the only one that may submit); processes that
  // share the work need the database they coordinate through.
  .refine((e) => e.WORKERS === 1 || e.DATABASE_URL, {
    message: 'more than one worker process needs DATABASE_URL (on SQLite one process owns DATA_DIR; see Scale-out)',
    path: ['WORKERS'],
  });

export type Env = z.infer<typeof envSchema>;

export interface Config {
  host: string;
  port: number;
  /** Gateway processes sharing HOST:PORT (node:cluster, src/cluster.ts); more than 1 only with DATABASE_URL. */
  workers: number;
  dataDir: string;
  logLevel: Env['LOG_LEVEL'];
  /** Where upstream can reach this gateway; enables webhooks. No trailing slash. */
  publicUrl?: string;
  /** A bearer token a Prometheus scraper may send to GET /metrics, besides any live API key. */
  metricsToken?: string;
  upstream: {
    /** Undefined when the embedded sandbox is used: its URL is only known once the server listens. */
    baseUrl?: string;
    apiKey: string;
    timeoutMs: number;
  };
  /** Present when no WAVESPEED_API_KEY is set: the sandbox upstream is mounted under /sandbox. */
  sandbox?: { taskSeconds: number; faults: SandboxFaults };
  poll: {
    initialMs: number;
    growth: number;
    maxMs: number;
    /** Safety-net interval for predictions whose updates arrive by webhook. */
    webhookFallbackMs: number;
    concurrency: number;
    /** A prediction without a final status this long after creation is failed. */
    maxAgeMs: number;
    /** Longest pause a Retry-After may impose. */
    retryAfterMaxMs: number;
    /** Submissions per prediction that may have reached upstream before it fails SUBMISSION_UNCERTAIN. */
    maxSubmissions: number;
    /** How long a submission without a certain answer is looked for upstream before it may be resent. */
    reconcileGraceMs: number;
  };
  /** The account tier's limits; undefined: none. */
  admission: { maxConcurrent?: number; maxPerMinute?: number };
  /** Final predictions older than this are deleted with their files; 0 keeps everything. */
  retentionMs: number;
  media: { keep: boolean; maxBytes: number };
  /** Cache `prediction(id)` answers over HTTP (server/response-cache.ts); off only to measure without it. */
  responseCache: boolean;
  /** Outgoing webhooks (CreateVideoInput.webhookUrl). */
  webhooks: {
    /** Deliver to loopback and private addresses too (tests, private deployments). */
    allowPrivate: boolean;
    /** Open mode's signing secret; unset: one generated into DATA_DIR. */
    signingSecret?: string;
    /** First retry delay; each later one doubles, up to an hour, for 24 h. */
    retryBaseMs: number;
    timeoutMs: number;
  };
  access: {
    /** Browser origins allowed besides the server's own (and PUBLIC_URL's). */
    corsOrigins: string[];
    quotas: QuotaSettings;
  };
  /** Present with DATABASE_URL: N instances share one Postgres (issue 16). */
  scaleOut?: {
    databaseUrl: string;
    /** The bus between instances; unset: Postgres LISTEN/NOTIFY. */
    redisUrl?: string;
    /** How long a claimed prediction stays this instance's (LEASE_MS). */
    leaseMs: number;
    /** Every watched prediction is read again this often, besides on each bus reconnect; 0: only then. */
    resyncMs: number;
  };
}

export class ConfigError extends Error {}

/**
 * Upstream posts webhooks only to HTTPS URLs, and the signature protects nothing a plain-HTTP
 * path can tamper with in transit: http:// is allowed only for this machine (tests, a local proxy).
 */
function checkPublicUrl(value: string | undefined, ctx: z.RefinementCtx): void {
  if (value === undefined || !URL.canParse(value)) return; // the url() check has said so already
  const url = new URL(value);
  if (url.protocol === 'https:') return;
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const loopback = host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
  if (url.protocol === 'http:' && loopback) return;
  ctx.addIssue({ code: z.ZodIssueCode.custom, message: `must be an https:// URL (http:// only for a loopback address such as http://127.0.0.1:4000); got ${url.protocol}//${url.host}` });
}

/** `https://a.example, http://localhost:5173` → exact origins; anything but a bare origin is an error. */
function parseOrigins(value: string, ctx: z.RefinementCtx): string[] {
  const origins: string[] = [];
  for (const item of value.split(',').map((s) => s.trim()).filter(Boolean)) {
    let origin: string | undefined;
    try {
      const url = new URL(item);
      if ((url.protocol === 'http:' || url.protocol === 'https:') && url.origin === item.replace(/\/$/, '')) origin = url.origin;
    } catch {}
    if (origin) origins.push(origin);
    else ctx.addIssue({ code: z.ZodIssueCode.custom, message: `"${item}" is not an origin like https://app.example.com` });
  }
  return origins;
}

/** Parses the environment once at start; a bad value stops the process with every problem listed. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  const e = parsed.data;
  const useSandbox = e.WAVESPEED_API_KEY === undefined;
  if (e.DATABASE_URL && useSandbox && !e.WAVESPEED_BASE_URL) {
    // Each instance's embedded sandbox knows only its own tasks: a task submitted through one and
    // polled through another would be "not found". All instances must use one upstream.
    throw new ConfigError(
      'invalid configuration:\n  DATABASE_URL: instances on one database must share one upstream: set WAVESPEED_API_KEY, or point WAVESPEED_BASE_URL at one sandbox (e.g. http://127.0.0.1:4000/sandbox of the first instance)',
    );
  }
  return {
    host: e.HOST,
    port: e.PORT,
    workers: e.WORKERS,
    dataDir: resolve(e.DATA_DIR),
    logLevel: e.LOG_LEVEL,
    publicUrl: e.PUBLIC_URL?.replace(/\/+$/, ''),
    metricsToken: e.METRICS_TOKEN,
    upstream: {
      baseUrl: e.WAVESPEED_BASE_URL ?? (useSandbox ? undefined : 'https://api.wavespeed.ai'),
      // The sandbox accepts any non-empty key; a fixed one keeps the real auth path exercised.
      apiKey: e.WAVESPEED_API_KEY ?? 'sandbox',
      timeoutMs: e.UPSTREAM_TIMEOUT_MS,
    },
    sandbox: useSandbox
      ? {
          taskSeconds: e.SANDBOX_TASK_SECONDS,
          faults: {
            failureRate: e.SANDBOX_FAILURE_RATE,
            hangRate: e.SANDBOX_HANG_RATE,
            serverErrorRate: e.SANDBOX_ERROR_RATE,
            rateLimitRate: e.SANDBOX_RATE_LIMIT_RATE,
            rateLimitSeconds: e.SANDBOX_RATE_LIMIT_SECONDS,
            slowRate: e.SANDBOX_SLOW_RATE,
            slowMs: e.SANDBOX_SLOW_MS,
            malformedRate: e.SANDBOX_MALFORMED_RATE,
            acceptThenStallRate: e.SANDBOX_ACCEPT_THEN_STALL_RATE,
            acceptThenErrorRate: e.SANDBOX_ACCEPT_THEN_ERROR_RATE,
            unauthorizedSeconds: e.SANDBOX_UNAUTHORIZED_SECONDS,
          },
        }
      : undefined,
    poll: {
      initialMs: e.POLL_INITIAL_MS,
      growth: e.POLL_GROWTH,
      maxMs: e.POLL_MAX_MS,
      webhookFallbackMs: e.POLL_WEBHOOK_FALLBACK_MS,
      concurrency: e.POLL_CONCURRENCY,
      maxAgeMs: e.MAX_PREDICTION_AGE_SECONDS * 1000,
      retryAfterMaxMs: e.RETRY_AFTER_MAX_MS,
      maxSubmissions: e.MAX_SUBMISSIONS_PER_PREDICTION,
      reconcileGraceMs: e.SUBMIT_RECONCILE_GRACE_MS,
    },
    admission: { maxConcurrent: e.UPSTREAM_MAX_CONCURRENT, maxPerMinute: e.UPSTREAM_MAX_PER_MINUTE },
    retentionMs: e.RETENTION_DAYS * 86_400_000,
    media: { keep: e.KEEP_OUTPUTS, maxBytes: e.MEDIA_MAX_BYTES },
    responseCache: e.RESPONSE_CACHE,
    webhooks: {
      allowPrivate: e.WEBHOOK_ALLOW_PRIVATE,
      signingSecret: e.WEBHOOK_SIGNING_SECRET,
      retryBaseMs: e.WEBHOOK_RETRY_BASE_MS,
      timeoutMs: e.WEBHOOK_TIMEOUT_MS,
    },
    scaleOut: e.DATABASE_URL ? { databaseUrl: e.DATABASE_URL, redisUrl: e.REDIS_URL, leaseMs: e.LEASE_MS, resyncMs: e.SUBSCRIPTION_RESYNC_MS } : undefined,
    access: {
      corsOrigins: e.CORS_ORIGINS,
      quotas: {
        createsPerMinute: e.KEY_CREATES_PER_MINUTE,
        maxInFlight: e.KEY_MAX_IN_FLIGHT,
        maxSubscriptionsPerSocket: e.MAX_SUBSCRIPTIONS_PER_SOCKET,
        maxSocketsPerKey: e.MAX_SOCKETS_PER_KEY,
      },
    },
  };
}
