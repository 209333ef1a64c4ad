import { readFileSync } from 'node:fs';
import { expect, test } from 'vitest';
import { printSdl } from '../src/schema/index.js';

test('schema/schema.graphql matches the Pothos schema (run `npm run schema:print` after a change)', () => {
  const checkedIn = readFileSync(new URL('../schema/schema.graphql', import.meta.url), 'utf8');
  expect(checkedIn).toBe(`${printSdl()}\n`);
});
