/**
 * The live page at `/`: create a video, follow it over graphql-ws, play the gateway's kept copy, and a
 * list of recent predictions that follows each unfinished one. Bundled with esbuild by
 * src/server/page.ts; graphql-ws is its only dependency, and every request stays on this origin.
 */
import { createClient, type Client } from 'graphql-ws';
import { imageDimensionViolation, imageFileViolation, sniffImageType } from '../src/validation/image-rules.js';

type Status = 'CREATED' | 'PROCESSING' | 'COMPLETED' | 'FAILED';

interface Prediction {
  id: string;
  status: Status;
  input: { prompt: string; hasImage: boolean };
  outputs: string[];
  keptOutputs: string[];
  error: string | null;
  createdAt: string;
  completedAt: string | null;
}

const FIELDS = 'id status input { prompt hasImage } outputs keptOutputs error createdAt completedAt';
const CREATE = `mutation Create($input: CreateVideoInput!) { createVideo(input: $input) { ${FIELDS} } }`;
const FOLLOW = `subscription Follow($id: ID!) { predictionUpdated(id: $id) { ${FIELDS} } }`;
const RECENT = `query Recent { predictions(first: 10) { nodes { ${FIELDS} } } }`;
const RECENT_LIMIT = 10;
const KEY_STORAGE = 'cinegraph.apiKey';

const finished = (s: Status) => s === 'COMPLETED' || s === 'FAILED';

function $<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing from the page`);
  return el as T;
}

// ---- API key: entered once, kept in localStorage, sent on HTTP and on the socket ----

function apiKey(): string | null {
  try {
    return localStorage.getItem(KEY_STORAGE);
  } catch {
    return null; // storage disabled: the page still works without a key
  }
}

function authHeaders(): Record<string, string> {
  const key = apiKey();
  return key ? { authorization: `Bearer ${key}` } : {};
}

class RequestError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

async function gql<T>(query: string, variables?: Record<string, unknown>): Promise<T> {
  let res: Response;
  try {
    res = await fetch('/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json, application/json', ...authHeaders() },
      body: JSON.stringify({ query, variables }),
    });
  } catch {
    throw new RequestError('UNREACHABLE', 'the gateway could not be reached');
  }
  let body: { data?: T | null; errors?: Array<{ message: string; extensions?: { code?: string } }> };
  try {
    body = await res.json();
  } catch {
    throw new RequestError(`HTTP_${res.status}`, `the gateway answered ${res.status} ${res.statusText}`);
  }
  const first = body.errors?.[0];
  if (first) throw new RequestError(first.extensions?.code ?? 'ERROR', first.message);
  if (!res.ok || !body.data) throw new RequestError(`HTTP_${res.status}`, `the gateway answered ${res.status}`);
  return body.data;
}

let socket: Client | undefined;

/** One lazy graphql-ws connection; recreated when the key changes so connectionParams carry the new one. */
function ws(): Client {
  socket ??= createClient({
    url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql`,
    connectionParams: () => authHeaders(),
    lazy: true,
    retryAttempts: 5,
  });
  return socket;
}

function describe(err: unknown): string {
  if (Array.isArray(err)) return err.map((e) => describe(e)).join('; ');
  if (err instanceof CloseEvent) return `connection closed (${err.code}${err.reason ? `: ${err.reason}` : ''})`;
  if (err instanceof Error) return err.message;
  if (err && typeof err === 'object' && 'message' in err) {
    const e = err as { message: string; extensions?: { code?: string } };
    return e.extensions?.code ? `${e.extensions.code}: ${e.message}` : e.message;
  }
  return 'the live connection failed';
}

/** Follows one prediction until it finishes; returns an unsubscribe. */
function follow(id: string, onRow: (p: Prediction) => void, onError: (message: string) => void): () => void {
  return ws().subscribe<{ predictionUpdated: Prediction }>(
    { query: FOLLOW, variables: { id } },
    {
      next: (msg) => {
        if (msg.data?.predictionUpdated) onRow(msg.data.predictionUpdated);
        else if (msg.errors?.length) onError(describe(msg.errors));
      },
      error: (err) => onError(describe(err)),
      complete: () => {},
    },
  );
}

// ---- Image: the server's rules, checked before upload ----

const image = $<HTMLInputElement>('image');
const imageError = $<HTMLParagraphElement>('image-error');

/** The chosen file as a data URI, or throws RequestError with the code the server would give. */
async function readImage(file: File): Promise<string> {
  const head = new Uint8Array(await file.slice(0, 16).arrayBuffer());
  const type = sniffImageType(head);
  const early = imageFileViolation({ type, bytes: file.size });
  if (early) throw new RequestError(early.code, early.message);
  let width: number;
  let height: number;
  try {
    const bitmap = await createImageBitmap(file);
    ({ width, height } = bitmap);
    bitmap.close();
  } catch {
    throw new RequestError('IMAGE_FORMAT', 'image is not a readable JPEG or PNG');
  }
  const violation = imageDimensionViolation(width, height);
  if (violation) throw new RequestError(violation.code, violation.message);
  const base64 = await new Promise<string>((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ''));
    reader.onerror = () => reject(new RequestError('IMAGE_FORMAT', 'the image could not be read'));
    reader.readAsDataURL(file);
  });
  return `data:image/${type === 'jpg' ? 'jpeg' : 'png'};base64,${base64}`;
}

let imageCheck: Promise<string | undefined> = Promise.resolve(undefined);

image.addEventListener('change', () => {
  imageError.textContent = '';
  image.removeAttribute('aria-invalid');
  const file = image.files?.[0];
  imageCheck = file ? readImage(file) : Promise.resolve(undefined);
  imageCheck.catch((err: RequestError) => {
    imageError.textContent = `${err.code}: ${err.message}`;
    image.setAttribute('aria-invalid', 'true');
  });
});

// ---- The prediction being watched ----

const current = $<HTMLElement>('current');
const timeline = $<HTMLOListElement>('timeline');
const video = $<HTMLVideoElement>('video');
const currentError = $<HTMLParagraphElement>('current-error');
const statusBadge = $<HTMLSpanElement>('current-status');
const elapsed = $<HTMLTimeElement>('elapsed');

let watching: { id: string; stop: () => void; createdAt: number; end?: number; last?: Status } | undefined;

function seconds(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

setInterval(() => {
  if (watching) elapsed.textContent = seconds((watching.end ?? Date.now()) - watching.createdAt);
}, 500);

function show(p: Prediction): void {
  watching?.stop();
  const w = { id: p.id, stop: () => {}, createdAt: Date.parse(p.createdAt) } as NonNullable<typeof watching>;
  watching = w;
  current.hidden = false;
  $('current-id').textContent = p.id;
  $('current-prompt').textContent = p.input.prompt;
  timeline.replaceChildren();
  currentError.textContent = '';
  video.hidden = true;
  video.removeAttribute('src');
  video.load();
  render(p);
  w.stop = follow(
    p.id,
    (row) => watching === w && render(row),
    (message) => {
      if (watching === w) currentError.textContent = message;
    },
  );

  function render(row: Prediction): void {
    upsertRecent(row);
    statusBadge.textContent = row.status;
    statusBadge.dataset.status = row.status;
    if (row.status !== w.last) {
      w.last = row.status;
      const li = document.createElement('li');
      li.dataset.status = row.status;
      const name = document.createElement('strong');
      name.textContent = row.status;
      li.append(name, ` at ${seconds(Date.now() - w.createdAt)}`);
      timeline.append(li);
    }
    if (finished(row.status)) w.end = Date.parse(row.completedAt ?? '') || Date.now();
    if (row.status === 'FAILED') currentError.textContent = row.error ?? 'the prediction failed';
    // The gateway's kept copy first (served here, with Range); upstream's URL only if none was kept.
    const src = row.keptOutputs[0] ?? row.outputs[0];
    if (row.status === 'COMPLETED' && src && video.getAttribute('src') !== src) {
      video.src = src;
      video.hidden = false;
    }
    elapsed.textContent = seconds((w.end ?? Date.now()) - w.createdAt);
  }
}

// ---- Recent predictions, each unfinished one followed live ----

const recent = $<HTMLUListElement>('recent');
const recentError = $<HTMLParagraphElement>('recent-error');
const listed = new Map<string, { li: HTMLLIElement; badge: HTMLSpanElement; stop?: () => void }>();

function upsertRecent(p: Prediction, append = false): void {
  let item = listed.get(p.id);
  if (!item) {
    const li = document.createElement('li');
    li.dataset.id = p.id;
    const open = document.createElement('button');
    open.type = 'button';
    open.textContent = p.input.prompt;
    open.title = `Show prediction ${p.id}`;
    open.addEventListener('click', () => show(p));
    const badge = document.createElement('span');
    badge.className = 'badge';
    li.append(open, badge);
    item = { li, badge };
    listed.set(p.id, item);
    if (append) recent.append(li);
    else recent.prepend(li);
    recent.querySelector('.empty')?.remove();
    while (recent.children.length > RECENT_LIMIT) {
      const last = recent.lastElementChild as HTMLLIElement;
      const id = last.dataset.id ?? '';
      listed.get(id)?.stop?.();
      listed.delete(id);
      last.remove();
    }
    if (!finished(p.status)) {
      const entry = item;
      entry.stop = follow(p.id, (row) => setBadge(entry.badge, row.status), () => {});
    }
  }
  setBadge(item.badge, p.status);
}

function setBadge(badge: HTMLSpanElement, status: Status): void {
  badge.textContent = status;
  badge.dataset.status = status;
}

async function loadRecent(): Promise<void> {
  recentError.textContent = '';
  try {
    const { predictions } = await gql<{ predictions: { nodes: Prediction[] } }>(RECENT);
    for (const p of predictions.nodes) upsertRecent(p, true);
    if (!predictions.nodes.length) {
      const li = document.createElement('li');
      li.className = 'empty';
      li.textContent = 'None yet.';
      recent.append(li);
    }
  } catch (err) {
    const e = err as RequestError;
    recentError.textContent = `${e.code}: ${e.message}`;
  }
}

function resetRecent(): void {
  for (const { stop } of listed.values()) stop?.();
  listed.clear();
  recent.replaceChildren();
}

// ---- Create ----

const form = $<HTMLFormElement>('create-form');
const prompt = $<HTMLTextAreaElement>('prompt');
const submit = $<HTMLButtonElement>('submit');
const formError = $<HTMLParagraphElement>('form-error');

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  formError.textContent = '';
  if (!prompt.value.trim()) {
    formError.textContent = 'Write a prompt first.';
    prompt.focus();
    return;
  }
  submit.disabled = true;
  try {
    let dataUri: string | undefined;
    try {
      dataUri = await imageCheck;
    } catch {
      image.focus(); // the image's own message is already shown beside it
      return;
    }
    const input = { prompt: prompt.value, enablePromptExpansion: $<HTMLInputElement>('expand').checked, ...(dataUri ? { image: dataUri } : {}) };
    const { createVideo } = await gql<{ createVideo: Prediction }>(CREATE, { input });
    show(createVideo);
  } catch (err) {
    const e = err as RequestError;
    // The server's refusal, as it gave it (e.g. IMAGE_ASPECT_RATIO, UNAUTHENTICATED).
    formError.textContent = `${e.code}: ${e.message}`;
  } finally {
    submit.disabled = false;
  }
});

// ---- Key form ----

const keyInput = $<HTMLInputElement>('api-key');
const keyStatus = $<HTMLParagraphElement>('key-status');

function keyChanged(): void {
  keyStatus.textContent = apiKey() ? 'A key is saved in this browser.' : 'No key saved.';
  // A new key means new connectionParams: reconnect, follow again, reload the list.
  watching?.stop();
  resetRecent();
  void socket?.dispose();
  socket = undefined;
  const id = watching?.id;
  watching = undefined;
  void loadRecent().then(() => {
    const again = id && listed.get(id);
    if (again) (again.li.querySelector('button') as HTMLButtonElement).click();
  });
}

$<HTMLFormElement>('key-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
  } catch {
    keyStatus.textContent = 'This browser does not allow keeping the key.';
    return;
  }
  keyInput.value = '';
  keyChanged();
});

$<HTMLButtonElement>('forget-key').addEventListener('click', () => {
  try {
    localStorage.removeItem(KEY_STORAGE);
  } catch {}
  keyChanged();
});

keyStatus.textContent = apiKey() ? 'A key is saved in this browser.' : 'No key saved.';
void loadRecent();
