import { defineConfig } from 'vitest/config';

export default defineConfig({
  // graphql ships both .mjs and .js; Pothos and yoga load the CommonJS build, so the tests must
  // too, or two copies of graphql meet and refuse each other's types.
  resolve: { alias: { graphql: 'graphql/index.js' } },
  test: {
    include: ['test/**/*.test.ts'],
    setupFiles: ['test/helpers/setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Every file starts its own servers on port 0 with its own database, so files can run in parallel.
    pool: 'forks',
    // Two files at once on CI's two cores (vitest's default is cores - 1, one file at a time): the
    // suite spends much of its time waiting on servers, child processes and Chromium, so the second
    // worker roughly halves it (~7 min to ~4.5 min on two cores). The whole-suite loops recorded in
    // TESTING.md were run this way.
    maxWorkers: 2,
    // Each worker keeps its module cache from one file to the next. With isolation every file
    // re-imported the app (yoga, Pothos, drizzle, pg, ioredis...: ~2.5 s a file on two busy cores);
    // without it a whole run went from 461 s to 360 s here. Nothing in src/ keeps state at module
    // level that a test depends on, and every spy or fake timer in test/ is restored where it is set.
    isolate: false,
  },
});
