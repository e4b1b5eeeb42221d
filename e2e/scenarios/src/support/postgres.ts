// PostgreSQL as a shadowset PVC's consumer on kind (postgres.kind.ts): the manifests of a one-replica
// StatefulSet whose data directory lives on a Filesystem PVC of the driver's class, a client pod that runs
// pgbench, psql and pg_amcheck against it over TCP, and what pgbench's summary says.

/** The uid/gid the image runs as (read from the image at build time: whatever Debian's package made). */
export interface PgUser { uid: number; gid: number }

export const PG_PORT = 5432;

// Postgres stops "smart" on SIGTERM (it waits for every session to end): the kubelet would then kill it at the
// grace period's end. As the Debian packaging's pg_ctlcluster does, a stop here is "fast": SIGINT ends the
// sessions, writes a checkpoint and exits, so a deleted pod leaves a clean data directory. The data directory
// is a subdirectory of the volume (ext4 has lost+found at its root). Checksums on, so pg_amcheck and every
// read see a torn or lost page.
const START = [
  'set -e',
  'if [ ! -s "$PGDATA/PG_VERSION" ]; then',
  '  initdb -D "$PGDATA" -U postgres --data-checksums --auth-local=trust --auth-host=scram-sha-256 --pwfile=/etc/pg/password',
  '  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"',
  'fi',
  `postgres -D "$PGDATA" -c listen_addresses='*' -c port=${PG_PORT} -c unix_socket_directories=/tmp -c shared_buffers=32MB -c max_wal_size=96MB -c min_wal_size=32MB &`,
  'pid=$!',
  'trap \'kill -INT $pid\' TERM INT',
  'wait $pid || wait $pid',
].join('\n');

export function statefulSet(o: { ns: string; name: string; image: string; user: PgUser; storageClass: string; size: string; secret: string }): unknown {
  const data = { name: 'data', mountPath: '/data' };
  return {
    apiVersion: 'apps/v1', kind: 'StatefulSet', metadata: { name: o.name, namespace: o.ns },
    spec: {
      serviceName: o.name, replicas: 1, selector: { matchLabels: { app: o.name } },
      template: {
        metadata: { labels: { app: o.name } },
        spec: {
          terminationGracePeriodSeconds: 30,
          securityContext: { runAsNonRoot: true, runAsUser: o.user.uid, runAsGroup: o.user.gid },
          // The volume's root is root's: the data directory is made once, owned by postgres, mode 0700.
          initContainers: [{
            name: 'datadir', image: o.image, imagePullPolicy: 'Never', securityContext: { runAsUser: 0, runAsNonRoot: false },
            command: ['sh', '-c', `install -d -o ${o.user.uid} -g ${o.user.gid} -m 0700 /data/pgdata`], volumeMounts: [data],
          }],
          containers: [{
            name: 'postgres', image: o.image, imagePullPolicy: 'Never', command: ['sh', '-c', START],
            env: [{ name: 'PGDATA', value: '/data/pgdata' }],
            ports: [{ containerPort: PG_PORT, name: 'pg' }],
            readinessProbe: { exec: { command: ['pg_isready', '-h', '/tmp', '-p', String(PG_PORT), '-U', 'postgres'] }, periodSeconds: 2, failureThreshold: 3 },
            volumeMounts: [data, { name: 'secret', mountPath: '/etc/pg', readOnly: true }],
          }],
          volumes: [{ name: 'secret', secret: { secretName: o.secret, defaultMode: 0o444 } }],
        },
      },
      volumeClaimTemplates: [{
        metadata: { name: 'data' },
        spec: { accessModes: ['ReadWriteOnce'], volumeMode: 'Filesystem', storageClassName: o.storageClass, resources: { requests: { storage: o.size } } },
      }],
    },
  };
}

/** The client: on the control-plane node, which no fault here touches, so it outlives every move. */
export function clientPod(o: { ns: string; name: string; image: string; user: PgUser; node: string; secret: string }): unknown {
  return {
    apiVersion: 'v1', kind: 'Pod', metadata: { name: o.name, namespace: o.ns },
    spec: {
      nodeName: o.node, restartPolicy: 'Never', terminationGracePeriodSeconds: 1,
      tolerations: [{ key: 'node-role.kubernetes.io/control-plane', operator: 'Exists', effect: 'NoSchedule' }],
      securityContext: { runAsNonRoot: true, runAsUser: o.user.uid, runAsGroup: o.user.gid },
      containers: [{
        name: 'client', image: o.image, imagePullPolicy: 'Never', command: ['sleep', '7200'],
        env: [{ name: 'PGPASSWORD', valueFrom: { secretKeyRef: { name: o.secret, key: 'password' } } }, { name: 'PGUSER', value: 'postgres' }],
      }],
    },
  };
}

export interface BenchResult {
  code: number | null;
  /** transactions pgbench reports as processed (its summary), 0 when it printed none */
  processed: number;
  /** transactions that failed (PG 15's summary line), or null when it printed none */
  failed: number | null;
  /** the lines that say why a client stopped or a transaction failed */
  errors: string[];
  /** the longest run of progress intervals (-P) in which no transaction completed, in seconds */
  longestStallS: number;
  output: string;
}

export function parseBench(code: number | null, output: string): BenchResult {
  const processed = Number(/number of transactions actually processed: (\d+)/.exec(output)?.[1] ?? 0);
  const f = /number of failed transactions: (\d+)/.exec(output);
  const errors = output.split('\n').filter((l) => !l.startsWith('progress:') && /error|abort|FATAL|could not|terminat|closed the connection/i.test(l)).slice(0, 20);
  // "progress: 35.0 s, 0.0 tps, lat 0.000 ms stddev 0.000, 0 failed": nothing completed in that interval.
  let stall = 0;
  let longest = 0;
  let last = 0;
  for (const m of output.matchAll(/^progress: ([\d.]+) s, ([\d.]+) tps/gm)) {
    const at = Number(m[1]);
    stall = Number(m[2]) === 0 ? stall + (at - last) : 0;
    longest = Math.max(longest, stall);
    last = at;
  }
  return { code, processed, failed: f ? Number(f[1]) : null, errors, longestStallS: longest, output };
}
