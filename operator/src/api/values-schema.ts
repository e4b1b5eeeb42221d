/** charts/shadowset/values.schema.json from the zod schema of the chart's values (Helm reads JSON Schema draft-07). */
import { z } from 'zod';
import { chartValuesSchema } from './values.js';

export function chartValuesJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(chartValuesSchema, { target: 'draft-7', io: 'input' }) as Record<string, unknown>;
}

/** The file's text, as `npm run gen` writes it and the drift test expects it. */
export function renderChartValuesSchema(): string {
  return `${JSON.stringify(chartValuesJsonSchema(), null, 2)}\n`;
}
