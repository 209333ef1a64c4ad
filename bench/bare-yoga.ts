// The baseline: graphql-yoga with nothing of ours, started the same way as src/main.ts.
import { createServer } from 'node:http';
import { createSchema, createYoga } from 'graphql-yoga';

const yoga = createYoga({
  schema: createSchema({ typeDefs: 'type Query { hello: String }', resolvers: { Query: { hello: () => 'world' } } }),
  logging: false,
});

createServer((req, res) => {
  if (req.url === '/healthz') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
  return yoga(req, res);
}).listen(Number(process.env.PORT), process.env.HOST ?? '127.0.0.1');

// Exit on the bench's SIGTERM as src/main.ts does, so `--cpu-prof` (BENCH_SERVER_NODE_ARGS) writes its profile.
process.once('SIGTERM', () => process.exit(0));
