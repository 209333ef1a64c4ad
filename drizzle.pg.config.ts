import { defineConfig } from 'drizzle-kit';

// The Postgres store's migrations (issue 16), beside SQLite's drizzle.config.ts:
// `npx drizzle-kit generate --config drizzle.pg.config.ts` after a change to src/db/pg/schema.ts.
export default defineConfig({
  dialect: 'postgresql',
  schema: './src/db/pg/schema.ts',
  out: './migrations-pg',
});
