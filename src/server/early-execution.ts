import type { IncomingMessage, ServerResponse } from 'node:http';
import { type DocumentNode, type ExecutionResult, getOperationAST } from 'graphql';
import { isPromise, type Plugin } from 'graphql-yoga';
import type { Principal } from '../auth/principal.js';
import { EARLY_MAX_BYTES, writeAnswer } from './early-answer.js';
import type { InitialContext, ServerContext, Yoga } from './yoga.js';

/** A request body of the plain shape (server/early-answer.ts): `query`, and `variables` and `operationName` if any. */
export interface PlainParams {
  query: string;
  variables?: Record<string, unknown> | null;
  operationName?: string | null;
}

/** What an operation executed here left for yoga to answer: a result it must process, or what execution threw. */
type Handoff = { result: ExecutionResult } | { thrown: unknown };

/** Query texts remembered as accepted by yoga; past it the set starts over (a client sending endless distinct texts). */
const MAX_ACCEPTED_TEXTS = 1000;

/** Distinct Host headers whose origin is remembered; past it the memo starts over (any client picks its Host). */
const MAX_REMEMBERED_HOSTS = 256;

/** How an operation executed here ended: its answer written here, or its outcome handed to yoga. */
export type EarlyOutcome = 'answered' | 'handed';

/**
 * Queries and mutations of the plain shape executed by the HTTP layer itself, outside yoga's HTTP
 * pipeline. For an uncached `prediction(id)` that pipeline (a Fetch Request and Response, the
 * request parser, the plugins' request and result hooks, content negotiation, each step a promise)
 * was about a quarter of the server's CPU, and for a `createVideo` about a fifth (issue 18,
 * BENCHMARKS.md "Session 12").
 *
 * The operation goes through yoga's own envelop (`yoga.getEnveloped`): the same parser and
 * validation caches, the same validation rules (the operation limits), the same context, and every
 * plugin's execute hooks (error masking, the result-cost limit, error logging). What is skipped is
 * what acts on the HTTP request and response, which for the plain shape (POST, `application/json`,
 * no Origin, an Accept yoga answers with JSON; see early-answer.ts) decides nothing; and yoga's
 * debug lines about handling it.
 *
 * Only a plain success is written here: data, no errors, no extensions, which yoga answers with 200
 * and its JSON. Anything else is yoga's to answer, with nothing run twice:
 * - a text yoga has not yet parsed and validated without errors itself (the first request of every
 *   text goes to yoga), an operation name the document does not hold, a subscription, or a request
 *   without a Host that URL parsing takes, goes to yoga before anything runs;
 * - a result with errors or extensions (their HTTP status and headers are yoga's business), and an
 *   execution that threw, is handed to yoga (`plugin`, its onParams), which answers it as if it had
 *   executed it itself: a mutation is never executed twice. (A throw is answered from yoga's request
 *   handler, which masks it as its operation handler would; the two differ only by the
 *   onExecutionResult hooks, which no plugin here has.)
 *
 * @param observe told how each operation executed here ended (the metrics' counter).
 */
export function createEarlyExecution(observe: (outcome: EarlyOutcome) => void = () => undefined) {
  const handoffs = new WeakMap<IncomingMessage, Handoff>();
  const origins = new Map<string, string | null>();

  /**
   * The origin of the URL yoga's adapter would give this request (`http://` + Host + path), or
   * undefined when it has no Host, one with a character that ends an authority, or one URL parsing
   * refuses: such a request is yoga's alone.
   * The path does not change the origin (it starts with '/', where an authority ends whatever the
   * Host holds). Remembered per Host: a URL parse per request would show in profiles.
   */
  const originOf = (host: string | undefined): string | undefined => {
    if (host === undefined) return undefined;
    let origin = origins.get(host);
    if (origin === undefined) {
      // A Host holding a path, query, fragment or user part changes where yoga's URL points (`a/b`
      // makes its path /b/graphql, which it answers 404), not only its origin: yoga's alone.
      origin = !/[/?#\\@]/.test(host) && URL.canParse(`http://${host}/`) ? new URL(`http://${host}/`).origin : null;
      if (origins.size >= MAX_REMEMBERED_HOSTS) origins.clear();
      origins.set(host, origin);
    }
    return origin ?? undefined;
  };

  /** Query texts yoga itself parsed and validated without errors, in a request of its own. */
  const accepted = new Set<string>();

  const plugin: Plugin<Record<string, unknown>, ServerContext> = {
    // Learns which texts are good: an operation is executed here only once yoga has parsed and
    // validated its text (so only when this plugin is in that yoga's list, where handed-over
    // outcomes are answered rather than executed again). Parse and validation errors are then
    // always yoga's own: its parser cache keeps an error with what its request-dependent hooks
    // added to it (a parse error's code), which a parse here, without a request, would not add.
    onValidate({ context }) {
      const { request, params } = context as { request?: Request; params?: { query?: unknown } };
      const query = params?.query;
      // Longer texts never come in a body answered here (EARLY_MAX_BYTES): not kept.
      if (!request || typeof query !== 'string' || query.length > EARLY_MAX_BYTES || accepted.has(query)) return;
      return ({ valid }) => {
        if (!valid) return;
        if (accepted.size >= MAX_ACCEPTED_TEXTS) accepted.clear();
        accepted.add(query);
      };
    },
    // Yoga's half of an operation executed here: answers it with what it produced.
    onParams({ context, setResult, setParamsHandler }) {
      const handed = handoffs.get(context.req);
      if (!handed) return;
      handoffs.delete(context.req);
      if ('result' in handed) setResult(handed.result);
      // As yoga's own handler reports a throw: its request handler masks and answers it.
      else
        setParamsHandler(() => {
          throw handed.thrown;
        });
    },
  };

  /**
   * Runs the operation of a plain request. True when the answer was written here; false when yoga
   * is to answer the request (nothing ran here, or what ran was handed to yoga).
   */
  const execute = (yoga: Yoga, req: IncomingMessage, res: ServerResponse, principal: Principal, params: PlainParams): boolean | Promise<boolean> => {
    if (!accepted.has(params.query)) return false;
    const origin = originOf(req.headers.host);
    if (origin === undefined) return false;
    const initial: InitialContext & ServerContext & { params: PlainParams } = { req, res, principal, params, origin };
    let enveloped: ReturnType<Yoga['getEnveloped']>;
    let document: DocumentNode;
    let contextValue: unknown;
    try {
      enveloped = yoga.getEnveloped(initial as never);
      document = enveloped.parse(params.query);
      if (enveloped.validate(enveloped.schema, document).length > 0) return false;
      const operation = getOperationAST(document, params.operationName);
      // No operation by that name, or several and no name: yoga's error. A subscription is yoga's.
      if (!operation || operation.operation === 'subscription') return false;
      contextValue = enveloped.contextFactory();
    } catch {
      return false; // nothing ran: yoga goes through the same steps and answers what they throw
    }
    if (isPromise(contextValue)) return false; // ours is synchronous; anything else is yoga's
    const finish = (result: ExecutionResult): boolean => {
      if (result.errors !== undefined || result.extensions !== undefined || !('data' in result) || Symbol.asyncIterator in result) {
        handoffs.set(req, { result });
        observe('handed');
        return false;
      }
      writeAnswer(req, res, JSON.stringify(result));
      observe('answered');
      return true;
    };
    const failed = (thrown: unknown): boolean => {
      handoffs.set(req, { thrown });
      observe('handed');
      return false;
    };
    let executed: ExecutionResult | Promise<ExecutionResult>;
    try {
      // Our executor's results: one ExecutionResult (no @defer/@stream here), or a promise of one.
      executed = enveloped.execute({ schema: enveloped.schema, document, contextValue, variableValues: params.variables, operationName: params.operationName }) as ExecutionResult | Promise<ExecutionResult>;
    } catch (err) {
      return failed(err);
    }
    return isPromise(executed) ? executed.then(finish, failed) : finish(executed);
  };

  return { plugin, execute };
}

export type EarlyExecution = ReturnType<typeof createEarlyExecution>;
