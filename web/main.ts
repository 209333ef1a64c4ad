/**
 * The live page at `/`: create a video, follow it over graphql-ws, play the gateway's kept copy, and a
 * list of recent predictions that follows each unfinished one. Bundled with esbuild by
 * src/server/page.ts; graphql-ws is its only dependency, and every request stays on this origin.
 */
import { createClient, type Client } from 'graphql-ws';
import { imageDimensionViolation, imageFileViolation, sniffImageType } from '../src/validation/image-rules.js';

type Status = 'CREATED' | 'PROCESSING' | 'COMPLETED' | 'FAILED' | 'CANCELED';

interface Prediction {
  id: string;
  status: Status;
  input: { prompt: string; hasImage: boolean };
  outputs: string[];
  keptOutputs: string[];
  error: string | null;
  createdAt: string;
  updatedAt: string;
  completedAt: string | null;
  /** Place in the admission queue (1 is next) while it waits for the account's tier; null once submitted. */
  queuePosition: number | null;
}

const FIELDS = 'id status input { prompt hasImage } outputs keptOutputs error createdAt updatedAt completedAt queuePosition';
const CREATE = `mutation Create($input: CreateVideoInput!) { createVideo(input: $input) { ${FIELDS} } }`;
const FOLLOW = `subscription Follow($id: ID!) { predictionUpdated(id: $id) { ${FIELDS} } }`;
const RECENT = `query Recent { predictions(first: 10) { nodes { ${FIELDS} } } }`;
const RECENT_LIMIT = 10;
/**
 * The schema has no "all my predictions" subscription (predictionUpdated follows one id), so the
 * list learns of predictions created elsewhere (the CLI, another tab, a backend) by asking for the
 * first page again: every few seconds while the page is visible, and at once when it becomes visible
 * again. One small query per interval per open page; each new unfinished row is then followed live.
 */
const RECENT_REFRESH_MS = 3000;
const KEY_STORAGE = 'cinegraph.apiKey';

/** The final statuses: nothing follows them, and the clock stops. */
const finished = (s: Status) => s === 'COMPLETED' || s === 'FAILED' || s === 'CANCELED';

/** 1st, 2nd, 3rd, 4th … 11th, 12th, 13th … 21st. */
function ordinal(n: number): string {
  const tens = n % 100;
  const suffix = tens >= 11 && tens <= 13 ? 'th' : (['th', 'st', 'nd', 'rd'][n % 10] ?? 'th');
  return `${n}${suffix}`;
}

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
const queuePlace = $<HTMLSpanElement>('current-queue');

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
  queuePlace.hidden = true;
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
    // Its place while it waits for the account's tier; the subscription sends it again whenever the queue moves.
    const place = row.status === 'CREATED' ? row.queuePosition : null;
    queuePlace.hidden = place === null;
    queuePlace.textContent = place === null ? '' : `queued: ${ordinal(place)}`;
    if (finished(row.status)) w.end = Date.parse(row.completedAt ?? '') || Date.now();
    if (row.status === 'FAILED') currentError.textContent = row.error ?? 'the prediction failed';
    if (row.status === 'CANCELED') currentError.textContent = row.error ?? 'the prediction was canceled';
    // The gateway's kept copy first (served here, with Range); upstream's URL only if none was kept.
    const src = row.keptOutputs[0] ?? row.outputs[0];
    if (row.status === 'COMPLETED' && src && video.getAttribute('src') !== src) {
      video.src = src;
      video.hidden = false;
    }
    elapsed.textContent = seconds((w.end ?? Date.now()) - w.createdAt);
  }
}

// ---- Recent predictions: each unfinished one followed live, the page refetched for new ones ----

const recent = $<HTMLUListElement>('recent');
const recentError = $<HTMLParagraphElement>('recent-error');

interface Listed {
  li: HTMLLIElement;
  badge: HTMLSpanElement;
  createdAt: number;
  /** The newest state shown (updatedAt), so a refetch answered late never undoes a live event. */
  updatedAt: number;
  status: Status;
  stop?: () => void;
}
const listed = new Map<string, Listed>();
/** Bumped when the list is reset (a new key): answers to requests sent before are dropped. */
let listGeneration = 0;

/** Adds the prediction to the list or updates its row; follows it while it is unfinished. */
function upsertRecent(p: Prediction): void {
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
    item = { li, badge, createdAt: Date.parse(p.createdAt), updatedAt: Number.NEGATIVE_INFINITY, status: p.status };
    listed.set(p.id, item);
    arrange();
    if (!listed.has(p.id)) return; // older than the ten shown
  }
  setRow(item, p);
  if (!finished(item.status) && !item.stop) {
    const entry = item;
    entry.stop = follow(p.id, (row) => setRow(entry, row), () => {});
  }
}

function setRow(item: Listed, p: Prediction): void {
  const at = Date.parse(p.updatedAt);
  // A final status is never undone, and an older state never replaces a newer one.
  if (at < item.updatedAt || (finished(item.status) && !finished(p.status))) return;
  item.updatedAt = at;
  item.status = p.status;
  item.badge.textContent = p.status;
  item.badge.dataset.status = p.status;
  if (finished(p.status)) {
    item.stop?.();
    item.stop = undefined;
  }
}

/** Newest first, at most RECENT_LIMIT rows; a row pushed out stops being followed. */
function arrange(): void {
  const rows = [...listed.entries()].sort(([a, x], [b, y]) => y.createdAt - x.createdAt || (a < b ? 1 : -1));
  for (const [id, item] of rows.slice(RECENT_LIMIT)) {
    item.stop?.();
    item.li.remove();
    listed.delete(id);
  }
  recent.querySelector('.empty')?.remove();
  // append() moves an existing node: the rows end in this order, their buttons and listeners kept.
  recent.append(...rows.slice(0, RECENT_LIMIT).map(([, item]) => item.li));
}

async function loadRecent(): Promise<void> {
  const generation = listGeneration;
  try {
    const { predictions } = await gql<{ predictions: { nodes: Prediction[] } }>(RECENT);
    if (generation !== listGeneration) return;
    recentError.textContent = '';
    for (const p of predictions.nodes) upsertRecent(p);
    if (!predictions.nodes.length && !listed.size && !recent.querySelector('.empty')) {
      const li = document.createElement('li');
      li.className = 'empty';
      li.textContent = 'None yet.';
      recent.append(li);
    }
  } catch (err) {
    if (generation !== listGeneration) return;
    const e = err as RequestError;
    recentError.textContent = `${e.code}: ${e.message}`;
  }
}

function resetRecent(): void {
  listGeneration++;
  for (const { stop } of listed.values()) stop?.();
  listed.clear();
  recent.replaceChildren();
  recentError.textContent = '';
}

/** One refetch at a time, and none while the page is hidden (a background tab costs nothing). */
let refreshing = false;
async function refreshRecent(): Promise<void> {
  if (refreshing || document.visibilityState !== 'visible') return;
  refreshing = true;
  try {
    await loadRecent();
  } finally {
    refreshing = false;
  }
}
setInterval(() => void refreshRecent(), RECENT_REFRESH_MS);
document.addEventListener('visibilitychange', () => void refreshRecent());

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
