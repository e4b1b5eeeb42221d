// Certificates for one throw-away control plane, made with the openssl CLI (node:crypto makes keys but not
// X.509 certificates). EC P-256 keys: fast to generate, and accepted for serving, client and
// service-account signing by kube-apiserver.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { writeFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';

const run = promisify(execFile);

export interface Pki {
  dir: string;
  caCert: string;
  caKey: string;
  servingCert: string;
  servingKey: string;
  adminCert: string;
  adminKey: string;
  /** service-account token signing key (private) and its public half for verification */
  saKey: string;
  saPub: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await run('openssl', args, { cwd });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`openssl ${args[0]} failed: ${e.stderr ?? e.message}`);
  }
}

async function newKey(dir: string, name: string): Promise<string> {
  const path = join(dir, name);
  await openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', path], dir);
  return path;
}

async function signed(
  dir: string,
  name: string,
  subject: string,
  ext: string[],
  ca: { cert: string; key: string },
): Promise<{ cert: string; key: string }> {
  const key = await newKey(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.crt`);
  const extFile = join(dir, `${name}.ext`);
  await writeFile(extFile, ext.join('\n') + '\n');
  await openssl(['req', '-new', '-key', key, '-subj', subject, '-out', csr], dir);
  await openssl(
    ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', '30', '-sha256',
      '-extfile', extFile, '-out', cert],
    dir,
  );
  return { cert, key };
}

/** Generates a CA, an API server serving certificate for loopback, an admin (system:masters) client
 *  certificate and a service-account signing key pair in dir. */
export async function generatePki(dir: string, serviceIp: string): Promise<Pki> {
  const caKey = await newKey(dir, 'ca.key');
  const caCert = join(dir, 'ca.crt');
  await openssl(
    ['req', '-x509', '-new', '-key', caKey, '-subj', '/CN=shadowset-test-ca', '-days', '30', '-sha256',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
      '-out', caCert],
    dir,
  );
  const ca = { cert: caCert, key: caKey };
  const serving = await signed(dir, 'apiserver', '/CN=kube-apiserver', [
    'basicConstraints=CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    'extendedKeyUsage=serverAuth',
    `subjectAltName=IP:127.0.0.1,IP:${serviceIp},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,` +
      'DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local',
  ], ca);
  const admin = await signed(dir, 'admin', '/O=system:masters/CN=shadowset-admin', [
    'basicConstraints=CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    'extendedKeyUsage=clientAuth',
  ], ca);
  const saKey = await newKey(dir, 'sa.key');
  const saPub = join(dir, 'sa.pub');
  await openssl(['pkey', '-in', saKey, '-pubout', '-out', saPub], dir);
  return {
    dir, caCert, caKey,
    servingCert: serving.cert, servingKey: serving.key,
    adminCert: admin.cert, adminKey: admin.key,
    saKey, saPub,
  };
}

/** An admin kubeconfig with the certificates embedded, so the file works on its own. */
export async function writeKubeconfig(path: string, server: string, pki: Pki, name = 'shadowset-local'): Promise<string> {
  const b64 = async (p: string): Promise<string> => (await readFile(p)).toString('base64');
  const text = [
    'apiVersion: v1',
    'kind: Config',
    `current-context: ${name}`,
    'clusters:',
    `- name: ${name}`,
    '  cluster:',
    `    server: ${server}`,
    `    certificate-authority-data: ${await b64(pki.caCert)}`,
    'users:',
    '- name: admin',
    '  user:',
    `    client-certificate-data: ${await b64(pki.adminCert)}`,
    `    client-key-data: ${await b64(pki.adminKey)}`,
    'contexts:',
    `- name: ${name}`,
    '  context:',
    `    cluster: ${name}`,
    '    user: admin',
    '',
  ].join('\n');
  await writeFile(path, text, { mode: 0o600 });
  return path;
}
