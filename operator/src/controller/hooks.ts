/** Freeze/thaw hooks: a command run in a named pod (through the API server's exec) around a split. */
import type { KubeConfig } from '../kube/client.js';
import { execInPod } from '../kube/exec.js';

export interface HookSpec {
  pod: string;
  container?: string | undefined;
  command: string[];
  timeoutSeconds: number;
}

export interface Hooks {
  run(namespace: string, hook: HookSpec, what: 'freeze' | 'thaw'): Promise<void>;
}

export class ExecHooks implements Hooks {
  constructor(private readonly kc: KubeConfig) {}

  run(namespace: string, hook: HookSpec, what: 'freeze' | 'thaw'): Promise<void> {
    return execInPod(this.kc, { namespace, pod: hook.pod, container: hook.container, command: hook.command, timeoutMs: hook.timeoutSeconds * 1000, what: `${what} hook` });
  }
}
