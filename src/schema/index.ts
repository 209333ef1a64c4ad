import { lexicographicSortSchema, printSchema, type GraphQLSchema } from 'graphql';
import { builder } from './builder.js';
import './prediction.js';
import './connection.js';
import './create.js';
import './cancel.js';
import './webhooks.js';

let schema: GraphQLSchema | undefined;

/** The schema is immutable, so it is built once and shared by every app in the process. */
export function buildSchema(): GraphQLSchema {
  schema ??= builder.toSchema();
  return schema;
}

export function printSdl(): string {
  return printSchema(lexicographicSortSchema(buildSchema()));
}
