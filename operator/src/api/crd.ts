/**
 * CustomResourceDefinitions generated from the zod schemas: crds/*.yaml and the chart's copy are written
 * by `npm run gen` and a test fails if they drift from this.
 */
import yaml from 'js-yaml';
import { z } from 'zod';
import { GROUP, VERSION } from './group.js';
import { shadowSetSpecSchema, shadowSetStatusSchema } from './shadowset.js';
import { writeBitmapSpecSchema, writeBitmapStatusSchema } from './writebitmap.js';

type Json = Record<string, unknown>;

/** zod → OpenAPI v3 as Kubernetes wants it: structural, no $schema, no additionalProperties beside properties. */
export function openApi(schema: z.ZodType): Json {
  const raw = z.toJSONSchema(schema, { target: 'openapi-3.0', io: 'input', unrepresentable: 'any' }) as Json;
  return clean(raw) as Json;
}

function clean(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(clean);
  if (!v || typeof v !== 'object') return v;
  const o = { ...(v as Json) };
  delete o.$schema;
  if (o.properties && o.additionalProperties === false) delete o.additionalProperties;
  if (o.maximum === Number.MAX_SAFE_INTEGER) delete o.maximum;
  if (o.minimum === Number.MIN_SAFE_INTEGER) delete o.minimum;
  for (const k of Object.keys(o)) o[k] = clean(o[k]);
  return o;
}

function crd(kind: string, plural: string, shortNames: string[], spec: z.ZodType, status: z.ZodType, columns: Json[]): Json {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${plural}.${GROUP}` },
    spec: {
      group: GROUP,
      // The category must not be a resource's name: `kubectl delete shadowset NAME` would expand it to
      // every kind of the category and refuse ("you must specify only one resource").
      names: { kind, listKind: `${kind}List`, plural, singular: kind.toLowerCase(), shortNames, categories: ['shadowing'] },
      scope: 'Namespaced',
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: columns,
          schema: {
            openAPIV3Schema: {
              type: 'object',
              required: ['spec'],
              properties: {
                apiVersion: { type: 'string' },
                kind: { type: 'string' },
                metadata: { type: 'object' },
                spec: openApi(spec),
                status: openApi(status),
              },
            },
          },
        },
      ],
    },
  };
}

export function buildCrds(): { file: string; object: Json }[] {
  return [
    {
      file: `shadowsets.${GROUP}.yaml`,
      object: crd('ShadowSet', 'shadowsets', ['shs'], shadowSetSpecSchema, shadowSetStatusSchema, [
        { name: 'Members', type: 'string', jsonPath: '.status.membersInSync', description: 'Full members / members' },
        { name: 'State', type: 'string', jsonPath: '.status.state' },
        { name: 'Resync', type: 'string', jsonPath: '.status.recovery.mode' },
        { name: 'Progress', type: 'string', jsonPath: '.status.progress' },
        { name: 'Node', type: 'string', jsonPath: '.status.engineNode', description: 'Where the engine runs' },
        { name: 'Generation', type: 'integer', jsonPath: '.status.shadowGeneration', priority: 1 },
        { name: 'Endpoint', type: 'string', jsonPath: '.status.endpoint', priority: 1 },
        { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
      ]),
    },
    {
      file: `writebitmaps.${GROUP}.yaml`,
      object: crd('WriteBitmap', 'writebitmaps', ['wbm'], writeBitmapSpecSchema, writeBitmapStatusSchema, [
        { name: 'Set', type: 'string', jsonPath: '.spec.shadowSet' },
        { name: 'Member', type: 'string', jsonPath: '.spec.member' },
        { name: 'Populated', type: 'string', jsonPath: '.status.percentPopulated' },
        { name: 'Dirty', type: 'integer', jsonPath: '.status.dirtyBytes' },
        { name: 'Covered', type: 'integer', jsonPath: '.status.coveredBytes' },
        { name: 'Master Node', type: 'string', jsonPath: '.status.masterNode' },
        { name: 'ID', type: 'string', jsonPath: '.status.id', priority: 1 },
        { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
      ]),
    },
  ];
}

export function renderCrd(object: Json): string {
  return `# Generated from operator/src/api by npm run gen. Do not edit.\n${yaml.dump(object, { lineWidth: 120, noRefs: true, sortKeys: false })}`;
}
