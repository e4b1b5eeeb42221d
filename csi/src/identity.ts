/** The Identity service: who the plugin is and what it offers. */
import type { Handlers } from './server.js';
import { DRIVER_NAME, DRIVER_VERSION } from './spec.js';

export function identityService(o: { controller: boolean; probe?: () => Promise<boolean> }): Handlers {
  return {
    GetPluginInfo: async () => ({ name: DRIVER_NAME, vendor_version: DRIVER_VERSION, manifest: {} }),
    GetPluginCapabilities: async () => ({
      // Volumes grow offline only: the node's data path cannot learn a bigger unit while attached (controller/expand.ts).
      capabilities: [...(o.controller ? [{ service: { type: 'CONTROLLER_SERVICE' } }] : []), { volume_expansion: { type: 'OFFLINE' } }],
    }),
    Probe: async () => ({ ready: { value: o.probe ? await o.probe() : true } }),
  };
}
