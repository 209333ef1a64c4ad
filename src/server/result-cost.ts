import {
  getArgumentValues,
  getNamedType,
  getOperationAST,
  getVariableValues,
  GraphQLError,
  isObjectType,
  type DocumentNode,
  type FragmentDefinitionNode,
  type GraphQLObjectType,
  type GraphQLSchema,
  type SelectionSetNode,
} from 'graphql';
import type { Plugin } from 'graphql-yoga';

/**
 * The most one operation may cost. A field costs its `extensions.cost` (default 1; ~1 KB of
 * response at worst), once per row its parent list may return; a list field with a `first`
 * argument also costs ROW_COST per row it may read. A page of 100 predictions with every field
 * costs about 3,300; the response of any accepted operation stays within a few MB.
 */
export const MAX_RESULT_COST = 5000;
/** Reading and paginating one row, whatever is selected from it. */
export const ROW_COST = 3;
/** Largest `first` any list accepts; larger values are refused by the resolver before reading. */
const MAX_FIRST = 100;

/**
 * Costs that cannot depend on variables (no field with a `first` argument was walked) and are within
 * the limit, by schema, document and operation name. Yoga's parser cache hands the same document
 * object for the same query text, so a repeated operation is walked once: the walk and the variable
 * coercion it needs were 4% of an uncached `prediction(id)`'s CPU (issue 18). A cost over the limit
 * is never kept, so its refusal, or the variables' own error first, is decided afresh each time.
 */
const staticCosts = new WeakMap<GraphQLSchema, WeakMap<DocumentNode, Map<string | null | undefined, number>>>();

/**
 * What an operation may cost with its actual variable values and argument defaults. The static
 * cost limit sees `first: $f` as an unknown; this one runs after variables are known and before
 * any resolver, so `20 × predictions(first: $f)` with f = 100 is refused before a row is read.
 * Returns undefined when the variables do not coerce (execution then reports that error).
 */
export function resultCost(schema: GraphQLSchema, document: DocumentNode, operationName: string | null | undefined, rawVariables: Record<string, unknown> | null | undefined): number | undefined {
  const known = staticCosts.get(schema)?.get(document)?.get(operationName);
  if (known !== undefined) return known;
  const operation = getOperationAST(document, operationName);
  if (!operation) return undefined;
  const coerced = getVariableValues(schema, operation.variableDefinitions ?? [], rawVariables ?? {});
  if (coerced.errors) return undefined;
  const variables = coerced.coerced;
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const d of document.definitions) if (d.kind === 'FragmentDefinition') fragments.set(d.name.value, d);
  const root = schema.getRootType(operation.operation);
  if (!root) return undefined;

  let cost = 0;
  let dependsOnVariables = false;
  const walk = (set: SelectionSetNode, type: GraphQLObjectType, rows: number): void => {
    for (const sel of set.selections) {
      if (cost > MAX_RESULT_COST) return; // refused anyway; fragments could make the walk long
      if (sel.kind === 'Field') {
        const field = type.getFields()[sel.name.value];
        if (!field) continue; // __typename and introspection: a few bytes, limited by depth and tokens
        cost += rows * (typeof field.extensions.cost === 'number' ? field.extensions.cost : 1);
        let childRows = rows;
        if (field.args.some((a) => a.name === 'first')) {
          dependsOnVariables = true;
          let first = 0;
          try {
            const value = getArgumentValues(field, sel, variables).first;
            first = typeof value === 'number' ? Math.min(Math.max(value, 0), MAX_FIRST) : 0;
          } catch {}
          childRows = rows * first;
          cost += childRows * ROW_COST;
        }
        const named = getNamedType(field.type);
        if (sel.selectionSet && isObjectType(named)) walk(sel.selectionSet, named, childRows);
      } else {
        const fragment = sel.kind === 'InlineFragment' ? sel : fragments.get(sel.name.value);
        if (!fragment) continue;
        const on = fragment.typeCondition ? schema.getType(fragment.typeCondition.name.value) : type;
        walk(fragment.selectionSet, isObjectType(on) ? on : type, rows);
      }
    }
  };
  walk(operation.selectionSet, root, 1);
  if (!dependsOnVariables && cost <= MAX_RESULT_COST) {
    const bySchema = staticCosts.get(schema) ?? new WeakMap();
    staticCosts.set(schema, bySchema);
    const byName = bySchema.get(document) ?? new Map();
    bySchema.set(document, byName);
    byName.set(operationName, cost);
  }
  return cost;
}

function tooComplex(cost: number): GraphQLError {
  return new GraphQLError(`operation cost ${cost} exceeds ${MAX_RESULT_COST} with these variables: ask for fewer rows or fields`, {
    extensions: { code: 'QUERY_TOO_COMPLEX', http: { status: 400 } },
  });
}

/** Refuses, before execution, an operation whose cost with its variables is over MAX_RESULT_COST. */
export function useResultCostLimit(): Plugin {
  return {
    onExecute({ args, setResultAndStopExecution }) {
      const cost = resultCost(args.schema, args.document, args.operationName, args.variableValues as Record<string, unknown>);
      if (cost !== undefined && cost > MAX_RESULT_COST) setResultAndStopExecution({ errors: [tooComplex(cost)] });
    },
    onSubscribe({ args, setResultAndStopExecution }) {
      const cost = resultCost(args.schema, args.document, args.operationName, args.variableValues as Record<string, unknown>);
      if (cost !== undefined && cost > MAX_RESULT_COST) setResultAndStopExecution({ errors: [tooComplex(cost)] });
    },
  };
}
