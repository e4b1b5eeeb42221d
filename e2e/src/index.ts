// The e2e library: a local control plane and a node simulator, for operator integration tests and e2e
// scenarios. See e2e/README.md.
export { startControlPlane, ControlPlane } from './cluster/control-plane.js';
export type { ControlPlaneOptions } from './cluster/control-plane.js';
export { ensureBinaries } from './cluster/binaries.js';
export type { ClusterBinaries } from './cluster/binaries.js';
export { ManagedProcess, ownSignalHandling } from './cluster/processes.js';
export { NodeSimulator } from './sim/node-simulator.js';
export type { NodeSimulatorOptions, SimulatedNodeSpec } from './sim/node-simulator.js';
export { ContainerConfigError } from './sim/volumes.js';
export type { PodVolumePlugin } from './sim/volumes.js';
export { PROJECT_IMAGE, IMAGE_ENTRYPOINT, DEFAULT_COMMANDS, isProjectImage, resolveCommand } from './sim/commands.js';
export type { CommandTable } from './sim/commands.js';
export type { Backoff } from './sim/container-runner.js';
export { waitFor } from './wait.js';
export { repoRoot } from './paths.js';
export { createBackingDevice } from './devices.js';
export type { BackingDevice } from './devices.js';
export { createKindCluster, ensureKindToolchain, kindConfig, KindCluster, KIND_NETWORK, POD_SUBNET, SERVICE_SUBNET } from './kind/cluster.js';
export type { KindToolchain, KindClusterOptions } from './kind/cluster.js';
export { ensureDockerd, dockerVersion, docker, DOCKER } from './kind/docker.js';
export type { DockerEngine } from './kind/docker.js';
