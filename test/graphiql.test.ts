import { describe, expect, test } from 'vitest';
import { AUTH_HEADER_PLACEHOLDER, graphiqlOptions, renderLocalGraphiQL } from '../src/server/graphiql.js';

describe('GraphiQL options', () => {
  test('without API keys no tab carries an Authorization header', () => {
    const options = graphiqlOptions({ apiKeys: false });
    expect(options.defaultTabs?.map((t) => t.headers)).toEqual([undefined, undefined, undefined]);
    expect(options.headers).toBeUndefined();
    expect(options.subscriptionsProtocol).toBe('WS');
  });

  test('with API keys every example tab starts with the Bearer placeholder in its headers', () => {
    const options = graphiqlOptions({ apiKeys: true });
    expect(JSON.parse(AUTH_HEADER_PLACEHOLDER)).toEqual({ authorization: 'Bearer <your key>' });
    expect(options.defaultTabs?.map((t) => t.headers)).toEqual([AUTH_HEADER_PLACEHOLDER, AUTH_HEADER_PLACEHOLDER, AUTH_HEADER_PLACEHOLDER]);
    expect(options.defaultEditorToolsVisibility).toBe('headers');
  });

  test('a key-mode function is asked on every page load, so keys created after start count', () => {
    let keys = false;
    const settings = { apiKeys: () => keys };
    expect(graphiqlOptions(settings).defaultTabs?.[0]?.headers).toBeUndefined();
    keys = true;
    expect(graphiqlOptions(settings).defaultTabs?.[0]?.headers).toBe(AUTH_HEADER_PLACEHOLDER);
  });

  test('the rendered page inlines its scripts and carries the placeholder only when keys are on', () => {
    const on = renderLocalGraphiQL(graphiqlOptions({ apiKeys: true }));
    const off = renderLocalGraphiQL(graphiqlOptions({ apiKeys: false }));
    for (const html of [on, off]) {
      expect(html).not.toMatch(/<script[^>]+src=/);
      expect(html).not.toMatch(/<link[^>]+href="https?:/);
    }
    expect(on).toContain(JSON.stringify(AUTH_HEADER_PLACEHOLDER));
    // graphql-ws gets the key from the header editor through a live connectionParams object.
    for (const html of [on, off]) expect(html).toContain('{ connectionParams: window.__cinegraphConnectionParams })');
    expect(off).not.toContain('Bearer <your key>');
    // Built once per distinct options, not per request.
    expect(renderLocalGraphiQL(graphiqlOptions({ apiKeys: true }))).toBe(on);
  });
});
