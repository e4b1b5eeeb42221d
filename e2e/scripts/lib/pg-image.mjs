// PostgreSQL for the kind tier's database consumer (e2e/scenarios/src/postgres.kind.ts): Debian bookworm's
// own server and client packages, laid out by mmdebstrap like the other Debian images here (no registry is
// reached), then a second layer that runs as the package's `postgres` user by number, so a pod's
// `runAsNonRoot` can check it. Content-hashed like the rest: rebuilt only when its inputs change.
import { spawnSync } from 'node:child_process';
import { DOCKER } from './dockerd.mjs';
import { buildImage, debianImage } from './kind-images.mjs';

export const PG_MAJOR = 15;
// postgresql-15: initdb, postgres, pg_ctl, pgbench and the amcheck extension; postgresql-client-15: psql,
// pg_isready, pg_amcheck. Nothing else the scenario needs (its scripts are plain sh).
const PACKAGES = [`postgresql-${PG_MAJOR}`, `postgresql-client-${PG_MAJOR}`];
const BIN = `/usr/lib/postgresql/${PG_MAJOR}/bin`;
/** The name the scenario runs (its hashed tag is shadowset.local/postgres-base:<hash>). */
export const PG_IMAGE = `shadowset.local/postgres:${PG_MAJOR}`;

/**
 * Builds (or finds) the image; returns its reference and the uid/gid it runs as. The package's own
 * cluster (`main`, which postgresql-common makes on install) is not wanted: the pod makes its data
 * directory on the volume, so the install is told not to make one.
 */
export async function postgresImage(work) {
  const base = await debianImage(work, {
    name: 'postgres-base',
    variant: 'minbase',
    packages: PACKAGES,
    hook: {
      essential: `mkdir -p "$1/etc/postgresql-common/createcluster.d" && echo "create_main_cluster = false" > "$1/etc/postgresql-common/createcluster.d/no-main.conf"`,
      command: `rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*`,
      inputs: [],
    },
    changes: [`ENV PATH=${BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`, 'ENV LANG=C.UTF-8'],
  });
  // The uid the package's maintainer script gave postgres (adduser --system: the first free system uid).
  const r = spawnSync(DOCKER, ['run', '--rm', '--network', 'none', '--entrypoint', 'id', base.tag, 'postgres'], { encoding: 'utf8', timeout: 120_000 });
  const m = /uid=(\d+)\(postgres\) gid=(\d+)/.exec(r.stdout ?? '');
  if (r.status !== 0 || !m) throw new Error(`no postgres user in ${base.tag}: ${r.stdout}${r.stderr}`);
  const [uid, gid] = [Number(m[1]), Number(m[2])];
  if (uid === 0) throw new Error(`postgres is uid 0 in ${base.tag}`);
  const dockerfile = [
    `FROM ${base.tag}`,
    `LABEL dev.shadowset.postgres.uid="${uid}" dev.shadowset.postgres.gid="${gid}"`,
    `USER ${uid}:${gid}`,
    '',
  ].join('\n');
  const img = await buildImage(work, { name: 'postgres', dockerfile, files: {}, inputs: [base.key], tags: [PG_IMAGE] });
  return { ref: PG_IMAGE, tag: img.tag, uid, gid };
}
