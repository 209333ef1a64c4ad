// Rewrites schema/schema.graphql from the Pothos schema; test/schema.test.ts fails when it is stale.
import { writeFileSync } from 'node:fs';
import { printSdl } from '../src/schema/index.js';

writeFileSync(new URL('../schema/schema.graphql', import.meta.url), `${printSdl()}\n`);
