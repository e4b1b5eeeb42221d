/** Operator metrics (Prometheus text) and reconcile counters. */
import type { ShadowSetStatus } from '../api/shadowset.js';

export class Metrics {
  reconciles = 0;
  errors = 0;
  private readonly sets = new Map<string, ShadowSetStatus>();

  observe(key: string, s: ShadowSetStatus): void {
    this.sets.set(key, s);
  }

  forget(key: string): void {
    this.sets.delete(key);
  }

  render(leader: boolean): string {
    const lines = [
      '# HELP shadowset_operator_reconciles_total Reconciles run.', '# TYPE shadowset_operator_reconciles_total counter',
      `shadowset_operator_reconciles_total ${this.reconciles}`,
      '# HELP shadowset_operator_reconcile_errors_total Reconciles that failed.', '# TYPE shadowset_operator_reconcile_errors_total counter',
      `shadowset_operator_reconcile_errors_total ${this.errors}`,
      '# HELP shadowset_operator_leader Whether this replica leads.', '# TYPE shadowset_operator_leader gauge',
      `shadowset_operator_leader ${leader ? 1 : 0}`,
      '# HELP shadowset_members_in_sync Full members per shadow set.', '# TYPE shadowset_members_in_sync gauge',
    ];
    for (const [key, s] of this.sets) {
      const [ns, name] = key.split('/');
      lines.push(`shadowset_members_in_sync{namespace="${ns}",shadowset="${name}"} ${s.members?.filter((m) => m.state === 'InSync').length ?? 0}`);
    }
    lines.push('# HELP shadowset_recovery_bytes_remaining Bytes a running copy or merge still has to do.', '# TYPE shadowset_recovery_bytes_remaining gauge');
    for (const [key, s] of this.sets) {
      const [ns, name] = key.split('/');
      lines.push(`shadowset_recovery_bytes_remaining{namespace="${ns}",shadowset="${name}"} ${Math.max(0, (s.recovery?.bytesTotal ?? 0) - (s.recovery?.bytesDone ?? 0))}`);
    }
    return lines.join('\n') + '\n';
  }
}
