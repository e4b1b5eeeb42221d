/** Freeze/thaw hooks: a command run in a named pod (through the API server's exec) around a split. */
import { Exec, type KubeConfig } from '@kubernetes/client-node';
import { Writable } from 'node:stream';
import { OperatorError } from '../kube/errors.js';

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

  async run(namespace: string, hook: HookSpec, what: 'freeze' | 'thaw'): Promise<void> {
    const exec = new Exec(this.kc);
    let out = '';
    const sink = new Writable({ write: (c, _e, cb) => ((out += String(c)), cb()) });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new OperatorError('OP_TRANSIENT', `${what} hook timed out after ${hook.timeoutSeconds} s`)), hook.timeoutSeconds * 1000);
      exec.exec(namespace, hook.pod, hook.container ?? '', hook.command, sink, sink, null, false, (st) => {
        clearTimeout(timer);
        if (st.status === 'Success') resolve();
        else reject(new OperatorError('OP_REFUSED', `${what} hook failed: ${st.message ?? ''} ${out.slice(-500)}`));
      }).catch((e: unknown) => {
        clearTimeout(timer);
        reject(new OperatorError('OP_TRANSIENT', `${what} hook could not run: ${(e as Error).message}`));
      });
    });
  }
}
