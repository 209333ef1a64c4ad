import type { PredictionRow } from '../db/schema.js';

/**
 * The body of an outgoing webhook, in the Standard Webhooks shape (`type`, `timestamp`, `data`),
 * `data` being the prediction with the fields and names of the GraphQL `Prediction`.
 */
export function webhookPayload(row: PredictionRow, baseUrl: string, now: Date): string {
  return JSON.stringify({
    type: `prediction.${row.status.toLowerCase()}`,
    timestamp: now.toISOString(),
    data: {
      id: row.id,
      status: row.status,
      model: row.model,
      upstreamId: row.upstreamId,
      input: { prompt: row.prompt, hasImage: row.hasImage, enablePromptExpansion: row.enablePromptExpansion },
      outputs: row.outputs,
      keptOutputs: row.keptOutputs.map((path) => `${baseUrl}${path}`),
      hasNsfwContents: row.hasNsfwContents,
      error: row.error,
      timings: { inference: row.inferenceMs },
      createdAt: row.createdAt.toISOString(),
      updatedAt: row.updatedAt.toISOString(),
      completedAt: row.completedAt?.toISOString() ?? null,
    },
  });
}
