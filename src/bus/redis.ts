import { Redis } from 'ioredis';
import type { Logger } from '../log.js';
import { type BusHandlers, CHANNEL, type Change, type ChangeBus, decodeChange, encodeChange, reconnectDelay } from './bus.js';

/** Most changes kept while the publisher reconnects. */
export const MAX_KEPT = 10_000;
/** How long a publish may wait for Redis's answer before it is kept for the next connection. */
const PUBLISH_TIMEOUT_MS = 5000;

export interface RedisBusOptions {
  url: string;
  /** This process's id, so its own announcements are not delivered back to it. */
  instanceId: string;
  log: Logger;
  channel?: string;
}

/**
 * The bus over Redis pub/sub (REDIS_URL), for deployments that keep such traffic off the database.
 * Two connections, as Redis requires: one subscribed, one to publish. ioredis reconnects both by
 * itself; its automatic re-subscription is turned off because its `ready` event comes before that
 * SUBSCRIBE is answered, and a resync started then could miss a change announced in between. Here
 * the resync starts once our own SUBSCRIBE has been answered.
 */
export class RedisChangeBus implements ChangeBus {
  private readonly channel: string;
  private readonly sub: Redis;
  private readonly pub: Redis;
  private handlers?: BusHandlers;
  private subscribedBefore = false;
  private closed = false;
  /** Changes not yet announced (see `announce`): prediction id → newest version, oldest first. */
  private readonly kept = new Map<string, number>();

  constructor(private readonly o: RedisBusOptions) {
    this.channel = o.channel ?? CHANNEL;
    const options = {
      lazyConnect: true,
      autoResubscribe: false,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      retryStrategy: (times: number) => reconnectDelay(times),
    };
    this.sub = new Redis(o.url, options);
    // A publish waiting on a connection that died without a word fails after this, and is kept.
    this.pub = new Redis(o.url, { ...options, commandTimeout: PUBLISH_TIMEOUT_MS });
    this.pub.on('ready', () => this.sendKept());
    for (const [name, conn] of [
      ['subscriber', this.sub],
      ['publisher', this.pub],
    ] as const) {
      // Without a listener, ioredis reports every failed reconnect as an unhandled error.
      conn.on('error', (err: Error) => o.log.debug({ err: err.message, conn: name }, 'bus: Redis connection error'));
    }
    this.sub.on('message', (channel: string, payload: string) => {
      if (channel !== this.channel) return;
      const change = decodeChange(payload, this.o.instanceId);
      if (change) this.handlers?.change(change);
    });
    this.sub.on('ready', () => {
      if (this.subscribedBefore) void this.resubscribe();
    });
    this.sub.on('close', () => {
      if (!this.closed && this.subscribedBefore) o.log.warn('bus: lost the Redis subscription; reconnecting');
    });
  }

  async start(handlers: BusHandlers): Promise<void> {
    this.handlers = handlers;
    await Promise.all([this.sub.connect(), this.pub.connect()]);
    await this.sub.subscribe(this.channel);
    this.subscribedBefore = true;
  }

  /**
   * Publishes now, or keeps the change for when the publisher is connected again: the two
   * connections reconnect on their own schedules, so after a Redis restart the subscribers (here
   * and on other instances) can be back, their resync done, while this publisher still waits for
   * its next attempt. An announcement dropped then reached nobody until the next periodic resync
   * (seen: 1 restart in 40 under load). Kept per prediction, newest version only, at most
   * MAX_KEPT of them: past that the oldest is dropped, as the resyncs after a long outage cover it.
   */
  async announce(change: Change): Promise<void> {
    if (this.closed) return;
    if (this.pub.status !== 'ready') {
      this.keep(change);
      return;
    }
    try {
      await this.pub.publish(this.channel, encodeChange(change, this.o.instanceId));
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message, predictionId: change.id }, 'bus: could not announce a change; sending it once Redis is back');
      this.keep(change);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.kept.clear();
    this.sub.disconnect();
    this.pub.disconnect();
  }

  private keep({ id, version }: Change): void {
    if (this.closed) return;
    const known = this.kept.get(id);
    if (known !== undefined && known >= version) return;
    this.kept.delete(id); // re-inserted last: the oldest entry is the first to go
    if (this.kept.size >= MAX_KEPT) this.kept.delete(this.kept.keys().next().value as string);
    this.kept.set(id, version);
  }

  private sendKept(): void {
    const changes = [...this.kept];
    this.kept.clear();
    for (const [id, version] of changes) void this.announce({ id, version });
  }

  private async resubscribe(): Promise<void> {
    try {
      await this.sub.subscribe(this.channel);
    } catch (err) {
      // The connection dropped again; its next `ready` tries once more.
      this.o.log.warn({ err: (err as Error).message }, 'bus: could not subscribe on Redis again');
      return;
    }
    this.o.log.info('bus: subscribed on Redis again; resyncing watched predictions');
    this.handlers?.reconnected();
  }
}
