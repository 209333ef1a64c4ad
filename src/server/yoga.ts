import type { GraphQLSchema } from 'graphql';
import { createYoga, type YogaServerInstance } from 'graphql-yoga';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../log.js';
import type { Context } from '../schema/context.js';

export interface ServerContext {
  req: IncomingMessage;
  res: ServerResponse;
}

export type Yoga = YogaServerInstance<ServerContext, Context>;

const exampleOperations = /* GraphQL */ `# Ask for a video; it comes back at once with status CREATED.
mutation Create {
  createVideo(input: { prompt: "A paper boat drifting down a rainy street, cinematic" }) {
    id
    status
  }
}

# Paste the id and run this to follow it live (WebSocket or SSE).
subscription Follow($id: ID! = "paste-an-id") {
  predictionUpdated(id: $id) {
    status
    outputs
    error
    updatedAt
  }
}

query Recent {
  predictions(first: 10) {
    nodes { id status input { prompt } outputs createdAt }
    pageInfo { hasNextPage endCursor }
  }
}
`;

export function createGraphqlHandler(schema: GraphQLSchema, context: () => Context, log: Logger): Yoga {
  return createYoga<ServerContext, Context>({
    schema,
    context,
    graphqlEndpoint: '/graphql',
    landingPage: false,
    graphiql: { title: 'cinegraph', defaultQuery: exampleOperations, subscriptionsProtocol: 'WS' },
    logging: {
      debug: (...args) => log.debug({ args }, 'yoga'),
      info: (...args) => log.info({ args }, 'yoga'),
      warn: (...args) => log.warn({ args }, 'yoga'),
      error: (...args) => log.error({ args }, 'yoga'),
    },
  });
}
