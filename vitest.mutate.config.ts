import { defineConfig } from 'vitest/config';
import base from './vitest.config.js';

/**
 * The suite as `npm test` runs it, for `npm run mutate`, less the browser tests: they drive Chromium
 * against the page and GraphiQL (web/), which mutation testing does not cover, and would only slow
 * every mutant down. MUTATE_TESTS (comma-separated globs) narrows the test files for a run on one
 * folder, e.g. `MUTATE_TESTS=test/validation.test.ts npm run mutate -- --mutate "src/validation/**"`:
 * fewer tests can only kill fewer mutants, so such a score is a lower bound.
 */
const only = process.env.MUTATE_TESTS?.split(',').filter(Boolean);

// Not mergeConfig: it would append these lists to the base's instead of replacing them.
export default defineConfig({
  ...base,
  test: {
    ...base.test,
    include: only?.length ? only : base.test?.include,
    exclude: ['test/browser.test.ts', '**/node_modules/**'],
  },
});
