import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { sniffImageType } from '../validation/image-rules.js';
import { CliError } from './exit.js';
import { download, gatewayFromEnv, PREDICTION_FIELDS, type Gateway, type Prediction } from './gateway.js';
import { createProgress, formatElapsed } from './progress.js';

const MIME: Record<string, string> = { jpg: 'image/jpeg', png: 'image/png', gif: 'image/gif', webp: 'image/webp', bmp: 'image/bmp' };

/**
 * `--image`: a URL or data: URI goes as it is; anything else is a local file, sent as a data: URI
 * typed by its magic bytes. The server judges the image (format, size, aspect ratio) and refuses
 * with its own code, so the rules live in one place.
 */
export async function imageArgument(value: string): Promise<string> {
  if (/^(https?:|data:)/i.test(value)) return value;
  let bytes: Buffer;
  try {
    bytes = await readFile(value);
  } catch (err) {
    throw new CliError('usage', `cannot read the image ${value}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const type = sniffImageType(bytes.subarray(0, 16));
  return `data:${(type && MIME[type]) ?? 'application/octet-stream'};base64,${bytes.toString('base64')}`;
}

/** The video worth saving: the gateway's kept copy (an absolute link on it), else upstream's. */
export const videoUrl = (p: Prediction): string | undefined => p.keptOutputs[0] ?? p.outputs[0];

function describe(p: Prediction): string {
  const rows: [string, string | null | undefined][] = [
    ['id', p.id],
    ['status', p.status],
    ['queue', p.queuePosition ? `${p.queuePosition} (1 is next)` : null],
    ['prompt', p.input.prompt],
    ['image', p.input.hasImage ? 'yes' : 'no'],
    ['created', p.createdAt],
    ['completed', p.completedAt],
    ['error', p.error],
    ['video', videoUrl(p)],
  ];
  return rows
    .filter(([, v]) => v)
    .map(([k, v]) => `${`${k}:`.padEnd(11)}${v}`)
    .join('\n');
}

const json = (value: unknown) => void process.stdout.write(`${JSON.stringify(value)}\n`);

/** A prediction that ended without a video: exit 5 (after --json printed it). */
function failure(p: Prediction): CliError {
  return new CliError('failed', `prediction ${p.id} ended ${p.status}${p.error ? `: ${p.error}` : ''}`);
}

/** Runs an action; under --json a CliError is also printed on stdout as `{"error": …}`. */
function action<A extends unknown[]>(run: (gateway: Gateway, ...args: A) => Promise<void>) {
  return async (...args: A) => {
    const opts = args.at(-2) as { json?: boolean } | undefined;
    try {
      await run(gatewayFromEnv(), ...args);
    } catch (err) {
      if (opts?.json && err instanceof CliError && err.kind !== 'failed') json(err);
      throw err;
    }
  };
}

/**
 * Follows a prediction to its end with progress on stderr; returns the last state.
 * @param since when the elapsed clock starts; by default the prediction's creation.
 */
async function follow(
  gateway: Gateway,
  id: string,
  opts: { json: boolean; since?: number; known?: Prediction; onEvent?: (p: Prediction, print: (l: string) => void) => void },
) {
  let createdAt: number | undefined;
  const progress = createProgress({ json: opts.json, since: () => opts.since ?? createdAt ?? Date.now() });
  let final: Prediction | undefined;
  try {
    // What the caller already knows (create's own answer) is shown first: a subscription that only
    // starts after the first change (a slow machine) would otherwise never show it was CREATED.
    if (opts.known) {
      createdAt = Date.parse(opts.known.createdAt);
      progress.update(opts.known);
    }
    final = await gateway.follow(id, (p) => {
      createdAt ??= Date.parse(p.createdAt);
      progress.update(p);
      opts.onEvent?.(p, progress.print);
    });
    return final;
  } finally {
    progress.stop(final);
  }
}

const positiveInt = (value: string): number => {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1) throw new InvalidArgumentError('must be a whole number of at least 1');
  return n;
};

/** `cinegraph create|get|list|watch`: predictions on the server at CINEGRAPH_URL. */
export function registerPredictions(program: Command): void {
  program
    .command('create')
    .description('create a video; prints its id, or with --wait follows it to the end (with --out, saves the video)')
    .argument('<prompt>', 'what the video shows (1 to 2000 characters)')
    .option('--image <path-or-url>', 'first frame: a JPEG or PNG file (sent as a data: URI), or a public http(s) URL')
    .option('--no-prompt-expansion', 'do not let the model rewrite the prompt')
    .option('--wait', 'follow the prediction over graphql-ws until it ends')
    .option('--out <file>', 'save the finished video here (implies --wait)')
    .option('--json', 'print machine-readable JSON on stdout, with no progress')
    .action(
      action(async (gateway, prompt: string, opts: { image?: string; promptExpansion: boolean; wait?: boolean; out?: string; json?: boolean }) => {
        const started = Date.now();
        const input: Record<string, unknown> = { prompt, enablePromptExpansion: opts.promptExpansion };
        if (opts.image !== undefined) input.image = await imageArgument(opts.image);
        const out = opts.out === undefined ? undefined : resolve(opts.out);
        const { createVideo } = await gateway.request<{ createVideo: Prediction }>(
          `mutation Create($input: CreateVideoInput!) { createVideo(input: $input) { ...P } } ${PREDICTION_FIELDS}`,
          { input },
        );
        if (!opts.wait && !out) {
          if (opts.json) json(createVideo);
          else {
            process.stderr.write(`created ${createVideo.id}; follow it with: cinegraph watch ${createVideo.id}\n`);
            console.log(createVideo.id);
          }
          return;
        }
        const final = await follow(gateway, createVideo.id, { json: Boolean(opts.json), since: started, known: createVideo });
        if (final.status !== 'COMPLETED') {
          if (opts.json) json(final);
          else console.log(describe(final));
          throw failure(final);
        }
        let saved: { path: string; bytes: number } | undefined;
        if (out) {
          const url = videoUrl(final);
          if (!url) throw new CliError('download', `prediction ${final.id} completed without a video URL`);
          saved = { path: out, bytes: await download(url, out) };
        }
        if (opts.json) json(saved ? { ...final, savedTo: saved.path } : final);
        else {
          console.log(describe(final));
          if (saved) console.log(`${'saved:'.padEnd(11)}${saved.path} (${saved.bytes} bytes, ${formatElapsed(Date.now() - started)} in all)`);
        }
      }),
    );

  program
    .command('get')
    .description('show one prediction')
    .argument('<id>', 'the prediction id')
    .option('--json', 'print it as JSON')
    .action(
      action(async (gateway, id: string, opts: { json?: boolean }) => {
        const { prediction } = await gateway.request<{ prediction: Prediction | null }>(
          `query Get($id: ID!) { prediction(id: $id) { ...P } } ${PREDICTION_FIELDS}`,
          { id },
        );
        // The server answers null for an unknown id (or another key's): the same refusal as watch gets.
        if (!prediction) throw new CliError('refused', `refused (NOT_FOUND): no prediction with id "${id}"`, 'NOT_FOUND');
        if (opts.json) json(prediction);
        else console.log(describe(prediction));
      }),
    );

  program
    .command('list')
    .description('list your predictions, newest first')
    .option('--status <status>', 'only this status (CREATED, PROCESSING, COMPLETED, FAILED, …)', (s: string) => s.toUpperCase())
    .option('--first <n>', 'how many (1 to 100)', positiveInt, 20)
    .option('--after <cursor>', 'the page after this cursor (printed when there are more)')
    .option('--json', 'print {"predictions": [...], "pageInfo": {...}}')
    .action(
      action(async (gateway, opts: { status?: string; first: number; after?: string; json?: boolean }) => {
        const { predictions } = await gateway.request<{ predictions: { nodes: Prediction[]; pageInfo: { hasNextPage: boolean; endCursor: string | null } } }>(
          `query List($first: Int, $after: String, $status: PredictionStatus) {
            predictions(first: $first, after: $after, status: $status) { nodes { ...P } pageInfo { hasNextPage endCursor } }
          } ${PREDICTION_FIELDS}`,
          { first: opts.first, after: opts.after, status: opts.status },
        );
        if (opts.json) return json({ predictions: predictions.nodes, pageInfo: predictions.pageInfo });
        if (!predictions.nodes.length) {
          console.log('no predictions');
          return;
        }
        const header = ['ID', 'STATUS', 'CREATED', 'PROMPT'];
        const table = [
          header,
          ...predictions.nodes.map((p) => [p.id, p.status, p.createdAt, p.input.prompt.length > 50 ? `${p.input.prompt.slice(0, 49)}…` : p.input.prompt]),
        ];
        const widths = header.map((_, i) => Math.max(...table.map((r) => r[i]?.length ?? 0)));
        for (const r of table) console.log(r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd());
        if (predictions.pageInfo.hasNextPage) process.stderr.write(`more: cinegraph list --after ${predictions.pageInfo.endCursor}\n`);
      }),
    );

  program
    .command('watch')
    .description('follow a prediction live until it ends: one line per status (exit 5 if it fails)')
    .argument('<id>', 'the prediction id')
    .option('--json', 'print each state as one JSON line')
    .action(
      action(async (gateway, id: string, opts: { json?: boolean }) => {
        let shown: string | undefined;
        const final = await follow(gateway, id, {
          json: Boolean(opts.json),
          onEvent: (p, print) => {
            if (opts.json) return json(p);
            if (p.status === shown) return;
            shown = p.status;
            const detail = p.status === 'COMPLETED' ? videoUrl(p) : p.error;
            print(`${p.updatedAt}  ${p.status}${detail ? `  ${detail}` : ''}`);
          },
        });
        if (final.status !== 'COMPLETED') throw failure(final);
      }),
    );
}
