export { DRIVER_NAME, DRIVER_VERSION, loadCsi } from './spec.js';
export { startServer } from './server.js';
export { identityService } from './identity.js';
export { controllerService } from './controller/controller.js';
export { nodeService } from './node/node.js';
export { parseParameters } from './controller/params.js';
