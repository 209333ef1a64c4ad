#!/usr/bin/env node
// The `cinegraph` command. The CLI is TypeScript like the server; tsx (a dependency) compiles it
// on load, so an `npm ci` checkout runs it as is under Node 20.
import { register } from 'tsx/esm/api';

register();
await import(new URL('../src/cli/main.ts', import.meta.url).href);
