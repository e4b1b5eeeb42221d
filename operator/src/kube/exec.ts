/** Running a command in a pod's container through the API server's exec (the only use of client-node's Exec). */
import { Exec, type KubeConfig } from '@kubernetes/client-node';
import { Writable } from 'node:stream';
import { OperatorError } from './errors.js';

export interface ExecRequest {
  namespace: string;
  pod: string;
  container?: string | undefined;
  command: string[];
  timeoutMs: number;
  /** Names the command in errors (e.g. "freeze hook"). */
  what: string;
}

/** Resolves when the command succeeded; rejects with OP_REFUSED (it failed) or OP_TRANSIENT (it could not run or timed out). */
export function execInPod(kc: KubeConfig, r: ExecRequest): Promise<void> {
  const exec = new Exec(kc);
  let out = '';
  const sink = new Writable({ write: (c, _e, cb) => ((out += String(c)), cb()) });
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new OperatorError('OP_TRANSIENT', `${r.what} timed out after ${r.timeoutMs / 1000} s`)), r.timeoutMs);
    exec.exec(r.namespace, r.pod, r.container ?? '', r.command, sink, sink, null, false, (st) => {
      clearTimeout(timer);
      if (st.status === 'Success') resolve();
      else reject(new OperatorError('OP_REFUSED', `${r.what} failed: ${st.message ?? ''} ${out.slice(-500)}`));
    }).catch((e: unknown) => {
      clearTimeout(timer);
      reject(new OperatorError('OP_TRANSIENT', `${r.what} could not run: ${(e as Error).message}`));
    });
  });
}
