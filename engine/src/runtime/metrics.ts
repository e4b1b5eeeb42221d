/** Prometheus text exposition of the engine's status. */
import type { EngineStatus } from '../api/status.js';

function esc(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

export function renderMetrics(s: EngineStatus): string {
  const out: string[] = [];
  const metric = (name: string, type: 'gauge' | 'counter', help: string, rows: [Record<string, string>, number][]) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, v] of rows) {
      const l = Object.entries(labels).map(([k, x]) => `${k}="${esc(x)}"`).join(',');
      out.push(`${name}${l ? `{${l}}` : ''} ${v}`);
    }
  };
  const set = { set: s.setId };
  metric('shadow_virtual_unit_bytes', 'gauge', 'Size of the virtual unit in bytes.', [[set, s.size]]);
  metric('shadow_generation', 'gauge', 'Shadow set generation number.', [[set, s.generation]]);
  metric('shadow_members', 'gauge', 'Members by state.', ['InSync', 'FullCopy', 'Minicopy', 'Merging', 'Removed', 'Faulted'].map(
    (st) => [{ ...set, state: st }, s.members.filter((m) => m.state === st).length] as [Record<string, string>, number],
  ));
  const per = (f: (m: EngineStatus['members'][number]) => number) =>
    s.members.map((m) => [{ ...set, member: m.id, path: m.path }, f(m)] as [Record<string, string>, number]);
  metric('shadow_member_reads_total', 'counter', 'Read operations sent to a member.', per((m) => m.counters.reads));
  metric('shadow_member_writes_total', 'counter', 'Write operations sent to a member.', per((m) => m.counters.writes));
  metric('shadow_member_read_bytes_total', 'counter', 'Bytes read from a member.', per((m) => m.counters.readBytes));
  metric('shadow_member_written_bytes_total', 'counter', 'Bytes written to a member.', per((m) => m.counters.writeBytes));
  metric('shadow_member_errors_total', 'counter', 'I/O errors returned by a member.', per((m) => m.counters.errors));
  metric('shadow_member_repairs_total', 'counter', 'Blocks rewritten on a member after a read error.', per((m) => m.counters.repairs));
  metric('shadow_member_timeouts_total', 'counter', 'Operations that exceeded the member timeout.', per((m) => m.counters.timeouts));
  metric('shadow_member_queue_depth', 'gauge', 'Operations in flight on a member.', per((m) => m.queueDepth));
  metric('shadow_recovery_bytes_total', 'gauge', 'Bytes the running copy or merge covers.', [[set, s.recovery.bytesTotal]]);
  metric('shadow_recovery_bytes_done', 'gauge', 'Bytes the running copy or merge has done.', [[set, s.recovery.bytesDone]]);
  metric('shadow_nbd_connections', 'gauge', 'Open NBD connections.', [[set, s.nbd.connections]]);
  metric('shadow_nbd_requests_total', 'counter', 'NBD requests by command.', Object.entries(s.nbd.requests).map(
    ([cmd, n]) => [{ ...set, command: cmd }, n] as [Record<string, string>, number],
  ));
  metric('shadow_nbd_rejected_total', 'counter', 'NBD requests rejected by validation.', [[set, s.nbd.rejected]]);
  const pb = s.nbd.payloadBuffers;
  if (pb) {
    metric('shadow_nbd_payload_buffers_taken_total', 'counter', 'Large WRITE payloads received into a pooled buffer.', [[set, pb.taken]]);
    metric('shadow_nbd_payload_buffers_reused_total', 'counter', 'Of them, into a buffer used before.', [[set, pb.reused]]);
    metric('shadow_nbd_payload_buffers_poisoned_total', 'counter', 'Pooled buffers never reused because a device request on them failed.', [[set, pb.poisoned]]);
    metric('shadow_nbd_payload_buffers_idle_bytes', 'gauge', 'Bytes of idle payload buffers kept for reuse.', [[set, pb.idleBytes]]);
  }
  return out.join('\n') + '\n';
}
