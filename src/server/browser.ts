import { useCSRFPrevention } from '@graphql-yoga/plugin-csrf-prevention';
import { createGraphQLError, type Plugin } from 'graphql-yoga';

/** Bodies a browser can send cross-site without a CORS preflight: an HTML form, or fetch in no-cors mode. */
const FORM_BODIES = ['application/x-www-form-urlencoded', 'multipart/form-data'];

/**
 * What keeps a web page from running operations through a visitor's browser, beside the origin
 * allow-list in the HTTP layer (which refuses requests that carry a foreign `Origin`):
 *
 * - yoga's CSRF prevention: a POST with a "simple" content type (form, multipart, text/plain) must
 *   carry a header only a preflighted request can (`x-graphql-yoga-csrf`). GET is left alone: yoga
 *   never runs a mutation over GET, and GraphQL over GET and SSE stay usable from plain links and curl.
 * - Form-encoded and multipart bodies are refused outright, header or not: this API has no
 *   uploads, and such a body never runs an operation (415 UNSUPPORTED_MEDIA_TYPE).
 */
export function useBrowserRules(): Plugin[] {
  const csrfCheck = useCSRFPrevention().onRequestParse;
  if (!csrfCheck) throw new Error('useCSRFPrevention has no onRequestParse hook');
  return [
    {
      onRequestParse(payload) {
        if (payload.request.method === 'GET' || payload.request.method === 'HEAD') return;
        try {
          return csrfCheck(payload);
        } catch (err) {
          // The library's error has no code; give it ours (it keeps its HTTP 403).
          if (err instanceof Error && 'extensions' in err) Object.assign(err.extensions as object, { code: 'CSRF_HEADER_REQUIRED' });
          throw err;
        }
      },
    },
    {
      onRequestParse({ request }) {
        const type = (request.headers.get('content-type') ?? '').toLowerCase();
        if (request.method === 'POST' && FORM_BODIES.some((t) => type.startsWith(t))) {
          throw createGraphQLError('form-encoded and multipart bodies are not accepted: send application/json', {
            extensions: { code: 'UNSUPPORTED_MEDIA_TYPE', http: { status: 415 } },
          });
        }
      },
    },
  ];
}
