import pg from 'pg';
import type { Logger } from '../log.js';
import { type BusHandlers, CHANNEL, type Change, type ChangeBus, decodeChange, encodeChange, reconnectDelay } from './bus.js';

export interface PgBusOptions {
  connectionString: string;
  /** This process's id, so its own announcements are not delivered back to it. */
  instanceId: string;
  log: Logger;
  channel?: string;
}

/**
 * The default bus of the Postgres mode: LISTEN/NOTIFY on the database the instances already share,
 * so scale-out needs nothing more. One dedicated connection listens (a pooled one cannot: LISTEN
 * belongs to a session); announcements go through a pool of one connection, so they keep their order. A lost listening connection (a
 * restart of Postgres, a failover, pg_terminate_backend) is reconnected with backoff, and the
 * bridge then resyncs, since NOTIFYs sent while nobody listened are not kept.
 */
export class PgChangeBus implements ChangeBus {
  private readonly channel: string;
  private readonly pool: pg.Pool;
  private listener?: pg.Client;
  private handlers?: BusHandlers;
  private closed = false;
  private retry?: ReturnType<typeof setTimeout>;

  constructor(private readonly o: PgBusOptions) {
    this.channel = o.channel ?? CHANNEL;
    // One connection: announcements leave in the order they were made.
    this.pool = new pg.Pool({ connectionString: o.connectionString, max: 1 });
    // An idle pooled connection that dies (a Postgres restart) is an error event, not a crash.
    this.pool.on('error', (err) => o.log.warn({ err: err.message }, 'bus: an idle Postgres connection failed'));
  }

  async start(handlers: BusHandlers): Promise<void> {
    this.handlers = handlers;
    await this.connect(); // the first connection must work: a bad URL fails the start, loudly
  }

  async announce(change: Change): Promise<void> {
    if (this.closed) return;
    try {
      await this.pool.query('SELECT pg_notify($1, $2)', [this.channel, encodeChange(change, this.o.instanceId)]);
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message, predictionId: change.id }, 'bus: could not announce a change; other instances catch up on their next resync');
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    const listener = this.listener;
    this.listener = undefined;
    await Promise.allSettled([listener?.end(), this.pool.end()]);
  }

  /** Connects the listening session; throws when it cannot. */
  private async connect(): Promise<void> {
    const client = new pg.Client({ connectionString: this.o.connectionString, keepAlive: true });
    let lost = false;
    const onLost = (err?: Error) => {
      if (lost || this.closed) return;
      lost = true;
      if (this.listener === client) {
        this.listener = undefined;
        this.o.log.warn({ err: err?.message }, 'bus: lost the Postgres listening connection; reconnecting');
      }
      void client.end().catch(() => {});
      this.reconnect(0);
    };
    client.on('error', onLost);
    client.on('end', () => onLost());
    client.on('notification', (msg) => {
      if (msg.channel !== this.channel || msg.payload === undefined) return;
      const change = decodeChange(msg.payload, this.o.instanceId);
      if (change) this.handlers?.change(change);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${pg.escapeIdentifier(this.channel)}`);
    } catch (err) {
      lost = true;
      void client.end().catch(() => {});
      throw err;
    }
    if (this.closed) {
      await client.end().catch(() => {});
      return;
    }
    this.listener = client;
    if (this.listenedBefore) {
      this.o.log.info('bus: listening on Postgres again; resyncing watched predictions');
      this.handlers?.reconnected();
    }
    this.listenedBefore = true;
  }

  /** Set once the first LISTEN succeeded: later connections are reconnections. */
  private listenedBefore = false;

  /** One pending attempt at a time; each failure waits longer, up to 2 s. */
  private reconnect(attempt: number): void {
    if (this.closed) return;
    clearTimeout(this.retry);
    this.retry = setTimeout(() => {
      this.connect().catch((err: Error) => {
        this.o.log.warn({ err: err.message, attempt }, 'bus: could not listen on Postgres; retrying');
        this.reconnect(attempt + 1);
      });
    }, reconnectDelay(attempt));
  }
}
