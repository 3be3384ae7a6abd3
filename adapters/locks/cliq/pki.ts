/**
 * Throw-away certificates for the CLIQ simulator and its tests: a CA, a server certificate for
 * localhost/127.0.0.1 and a client certificate, all signed by that CA (P-256, short-lived).
 *
 * Node's crypto can make keys but not X.509 certificates, so this drives the `openssl` CLI. It
 * is never used against a real CLIQ Web Manager: production certificates come from ASSA ABLOY's
 * certificate process and are configured as files (`cliq.tls`).
 */

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';

export interface PkiFiles {
  dir: string;
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

export function pkiPaths(dir: string, prefix = ''): PkiFiles {
  return {
    dir,
    caCert: join(dir, `${prefix}ca.pem`),
    caKey: join(dir, `${prefix}ca-key.pem`),
    serverCert: join(dir, `${prefix}server.pem`),
    serverKey: join(dir, `${prefix}server-key.pem`),
    clientCert: join(dir, `${prefix}client.pem`),
    clientKey: join(dir, `${prefix}client-key.pem`),
  };
}

/** True when every file of a PKI (with this prefix) exists in `dir`. */
export function hasPki(dir: string, prefix = ''): boolean {
  const p = pkiPaths(dir, prefix);
  return [p.caCert, p.serverCert, p.serverKey, p.clientCert, p.clientKey].every((f) => existsSync(f));
}

/**
 * Writes `${prefix}ca.pem`, `ca-key.pem`, `server.pem`, `server-key.pem`, `client.pem` and
 * `client-key.pem` into `dir`. Throws with a clear message when `openssl` is not installed.
 */
export function generatePki(dir: string, opts: { prefix?: string; days?: number; clientCn?: string } = {}): PkiFiles {
  const p = pkiPaths(dir, opts.prefix);
  const days = String(opts.days ?? 2);
  mkdirSync(dir, { recursive: true });
  const ossl = (args: string[]) => {
    try {
      execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
      if (e.code === 'ENOENT') throw new Error('the openssl command is needed to generate certificates (install openssl, or provide the PEM files)');
      throw new Error(`openssl ${args[0]} failed: ${e.stderr?.toString().trim() ?? e.message}`);
    }
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  ossl(['req', '-x509', ...ec, '-keyout', p.caKey, '-out', p.caCert, '-days', days, '-subj', `/CN=lockstep simulator CA ${opts.prefix ?? ''}`.trim(),
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  const leaf = (cert: string, key: string, cn: string, ext: string) => {
    const csr = `${cert}.csr`;
    const extFile = `${cert}.ext`;
    writeFileSync(extFile, ext);
    try {
      ossl(['req', ...ec, '-keyout', key, '-out', csr, '-subj', `/CN=${cn}`]);
      ossl(['x509', '-req', '-in', csr, '-CA', p.caCert, '-CAkey', p.caKey, '-set_serial', `0x${Date.now().toString(16)}${Math.floor(Math.random() * 1e6).toString(16)}`,
        '-days', days, '-out', cert, '-extfile', extFile]);
    } finally {
      rmSync(csr, { force: true });
      rmSync(extFile, { force: true });
    }
  };
  leaf(p.serverCert, p.serverKey, 'localhost', 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n');
  leaf(p.clientCert, p.clientKey, opts.clientCn ?? 'lockstep', 'extendedKeyUsage=clientAuth\n');
  return p;
}
