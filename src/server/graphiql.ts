import { renderGraphiQL } from '@graphql-yoga/render-graphiql';
import type { GraphiQLOptions } from 'graphql-yoga';

/**
 * GraphiQL from the installed package, not yoga's default page: that one loads its scripts from a
 * public CDN, so it never renders offline. @graphql-yoga/render-graphiql inlines the whole editor
 * (scripts, styles, Monaco workers as blobs) into one HTML document, so the page makes no request
 * beyond the server's own /graphql (HTTP for queries, graphql-ws for subscriptions).
 */

export interface GraphiqlSettings {
  /**
   * Whether the gateway asks for API keys: then every tab starts with an Authorization header to
   * fill in. A function is asked on each page load, so keys created after start count.
   */
  apiKeys: boolean | (() => boolean);
}

/** The header editor's starting text when keys are on; the user replaces the placeholder. */
export const AUTH_HEADER_PLACEHOLDER = JSON.stringify({ authorization: 'Bearer <your key>' });

const create = /* GraphQL */ `# Ask for a video; it comes back at once with status CREATED.
# Copy its id into the "Follow" tab to watch it live.
mutation Create($input: CreateVideoInput!) {
  createVideo(input: $input) {
    id
    status
    createdAt
  }
}
`;

const follow = /* GraphQL */ `# Every change of one prediction, live over graphql-ws, until COMPLETED or FAILED.
# Put the id from "Create" in the variables below.
subscription Follow($id: ID!) {
  predictionUpdated(id: $id) {
    id
    status
    keptOutputs
    outputs
    error
    updatedAt
  }
}
`;

const list = /* GraphQL */ `# The newest predictions first; pass endCursor as $after for the next page.
query Recent($after: String) {
  predictions(first: 10, after: $after) {
    nodes { id status input { prompt hasImage } keptOutputs createdAt }
    pageInfo { hasNextPage endCursor }
  }
}
`;

const pretty = (v: unknown) => JSON.stringify(v, null, 2);

/**
 * yoga's GraphiQL also reads `variables` (the editor's text on first load), which its type omits:
 * without it the first tab opens with an empty variables editor despite its defaultTabs entry.
 */
export type CinegraphGraphiQLOptions = GraphiQLOptions & { variables?: string };

export function graphiqlOptions({ apiKeys }: GraphiqlSettings): CinegraphGraphiQLOptions {
  const keysOn = typeof apiKeys === 'function' ? apiKeys() : apiKeys;
  const headers = keysOn ? AUTH_HEADER_PLACEHOLDER : undefined;
  // One tab per example, each runnable as it stands (the Follow tab after pasting an id).
  const first = { query: create, variables: pretty({ input: { prompt: 'A paper boat drifting down a rainy street, cinematic' } }), headers };
  const tabs = [
    first,
    { query: follow, variables: pretty({ id: 'paste-an-id' }), headers },
    { query: list, variables: pretty({ after: null }), headers },
  ];
  return {
    title: 'cinegraph',
    subscriptionsProtocol: 'WS',
    defaultTabs: tabs,
    variables: first.variables,
    ...(headers ? { headers, defaultHeaders: headers, defaultEditorToolsVisibility: 'headers' as const } : {}),
  };
}

/**
 * yoga's GraphiQL sends the header editor's headers with every HTTP request, but graphql-ws can
 * carry a key only in connection_init, which GraphiQL builds from the static `connectionParams`
 * option: with keys on, every subscription would be refused. This object is that option; its
 * `authorization` is read when a socket connects, from the header editor's text as GraphiQL
 * persists it (localStorage "graphiql:headers"). The placeholder is not sent. The socket closes
 * when its last subscription ends, so a key edited later is used by the next subscription.
 */
const CONNECTION_PARAMS_SCRIPT = /* JavaScript */ `<script>
  window.__cinegraphConnectionParams = Object.defineProperty({}, 'authorization', {
    enumerable: true,
    get() {
      try {
        const headers = JSON.parse(localStorage.getItem('graphiql:headers') || '{}');
        for (const [name, value] of Object.entries(headers)) {
          if (name.toLowerCase() === 'authorization' && typeof value === 'string' && !value.includes('<your key>')) return value;
        }
      } catch {}
      return undefined;
    },
  });
</script>`;

const rendered = new Map<string, string>();

/**
 * yoga's renderGraphiQL hook. The document is ~9 MB of inlined editor, so it is built once per
 * distinct options (in practice: once per process) instead of on every GET.
 */
export function renderLocalGraphiQL(options: GraphiQLOptions): string {
  const key = JSON.stringify(options);
  let html = rendered.get(key);
  if (html === undefined) {
    html = withConnectionParams(renderGraphiQL(options), key);
    rendered.set(key, html);
  }
  return html;
}

/** Points the options GraphiQL starts with at the live connectionParams object above. */
function withConnectionParams(html: string, optionsJson: string): string {
  const at = html.lastIndexOf(optionsJson);
  const body = html.indexOf('<body');
  // render-graphiql writes the options as JSON into its start-up call; if that ever changes, fail
  // loudly (the browser test would also see subscriptions refused) rather than serve a page without keys.
  if (at < 0 || body < 0) throw new Error('@graphql-yoga/render-graphiql changed its page layout: cannot pass connectionParams');
  const patched = `${html.slice(0, at)}Object.assign(${optionsJson}, { connectionParams: window.__cinegraphConnectionParams })${html.slice(at + optionsJson.length)}`;
  const bodyEnd = patched.indexOf('>', body) + 1;
  return `${patched.slice(0, bodyEnd)}${CONNECTION_PARAMS_SCRIPT}${patched.slice(bodyEnd)}`;
}
