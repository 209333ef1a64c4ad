import { Redis } from 'ioredis';
import type { Logger } from '../log.js';
import { type BusHandlers, CHANNEL, type Change, type ChangeBus, decodeChange, encodeChange, reconnectDelay } from './bus.js';

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
    // The two connections reconnect on their own schedules: after a Redis restart the subscriber
    // (here and on other instances) can be back, and its resync done, while this publisher still
    // waits for its next attempt. An announcement failed at once then was lost until the next
    // periodic resync (seen: 1 reconnect in 40 under load). So the publisher queues while it
    // reconnects; with maxRetriesPerRequest 1, ioredis rejects what is queued at every second
    // failed attempt, which bounds the queue to a few seconds of a longer outage (the resync
    // covers those).
    this.pub = new Redis(o.url, { ...options, enableOfflineQueue: true });
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

  async announce(change: Change): Promise<void> {
    if (this.closed) return;
    try {
      await this.pub.publish(this.channel, encodeChange(change, this.o.instanceId));
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message, predictionId: change.id }, 'bus: could not announce a change; other instances catch up on their next resync');
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.sub.disconnect();
    this.pub.disconnect();
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
