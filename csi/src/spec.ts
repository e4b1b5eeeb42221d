/**
 * The CSI spec's own csi.proto (fetched from its Go module by csi/scripts/csi-spec.mjs into csi/proto/),
 * loaded at run time: field names stay as the spec spells them (snake_case), enums are their names, int64
 * values are decimal strings (checked before use), and a oneof says which of its fields is set.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** The driver's name: what the CSIDriver object, StorageClasses and PVs name. */
export const DRIVER_NAME = 'csi.shadowset.dev';
export const DRIVER_VERSION = '0.1.0';

export const LOADER_OPTIONS: protoLoader.Options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

/** csi/proto/csi.proto beside this package, unless SHADOWSET_CSI_PROTO names another file. */
export function defaultProtoPath(): string {
  return process.env.SHADOWSET_CSI_PROTO ?? join(dirname(fileURLToPath(import.meta.url)), '..', 'proto', 'csi.proto');
}

export interface CsiServices {
  Identity: grpc.ServiceClientConstructor;
  Controller: grpc.ServiceClientConstructor;
  Node: grpc.ServiceClientConstructor;
}

export function loadCsi(protoPath = defaultProtoPath()): CsiServices {
  if (!existsSync(protoPath)) {
    throw new Error(`CSI spec not found at ${protoPath}: run \`node csi/scripts/csi-spec.mjs\` (npm run build does)`);
  }
  const def = protoLoader.loadSync(protoPath, LOADER_OPTIONS);
  const pkg = grpc.loadPackageDefinition(def) as unknown as { csi: { v1: CsiServices } };
  return pkg.csi.v1;
}
