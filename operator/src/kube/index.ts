// What other workspaces (the CSI controller) use to reach the API server: the same client, resources and
// typed errors as the operator, so @kubernetes/client-node stays behind this folder.
export { Kube, KubeConfig, R, pathOf, type Obj, type Resource } from './client.js';
export { OperatorError, isOperatorError, type OperatorErrorCode } from './errors.js';
export { CSI_DRIVER, attachedHandle, createdMs, olderFirst, type VolumeAttachment } from './attachments.js';
