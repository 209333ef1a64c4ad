// Mutation testing (StrykerJS 9, vitest runner): `npm run mutate`, or one folder at a time with
// `npm run mutate -- --mutate "src/validation/**/*.ts"`. Not part of `npm test`: the suite starts
// real servers, so a full run takes hours on two cores. Incremental: a rerun only tests the mutants
// whose code or covering tests changed since the last run (reports/stryker-incremental.json).
/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'vitest',
  vitest: { configFile: 'vitest.mutate.config.ts', related: true },
  // Each mutant runs only the tests that reached its code.
  coverageAnalysis: 'perTest',
  mutate: [
    'src/poller/**/*.ts',
    'src/db/**/*.ts',
    'src/validation/**/*.ts',
    'src/upstream/wavespeed.ts',
    'src/schema/**/*.ts',
    'src/server/**/*.ts',
  ],
  incremental: true,
  incrementalFile: 'reports/stryker-incremental.json',
  concurrency: 1,
  // Tests wait for real timers and servers; a mutant that makes one hang is a timeout (killed).
  timeoutFactor: 2,
  timeoutMS: 15_000,
  ignorePatterns: ['data', 'test-artifacts', 'tmp', 'reports', 'docs', 'bench', '.stryker-tmp'],
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/mutation.html' },
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  thresholds: { high: 85, low: 70, break: null },
  tempDirName: '.stryker-tmp',
  cleanTempDir: 'always',
};
