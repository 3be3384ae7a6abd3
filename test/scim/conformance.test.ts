import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdentityRepo } from '../../src/store/identities.ts';
import { freshStore, type TestStore } from '../helpers/stores.ts';
import { TOKEN_A, TOKEN_B, buildScimApp, scim, user } from './helpers.ts';

/**
 * Third-party IdP suites run with newman against a real listening server. The collections are
 * not part of this repository: they are read from ../shared/conformance/scim/ next to the
 * repository root and the suite is skipped (with a message) when that folder is absent.
 */
const SUITES = fileURLToPath(new URL('../../../shared/conformance/scim/', import.meta.url));
const OKTA = `${SUITES}okta-scim20-spec.postman_collection.json`;
const ENTRA = `${SUITES}entra-reference.postman_collection.json`;
const present = existsSync(OKTA) && existsSync(ENTRA);
if (!present) console.warn(`[scim conformance] skipped: ${SUITES} (with both collections) not found; third-party SCIM suites are not bundled`);

interface NewmanFailure {
  error: { name?: string; test?: string; message?: string };
  source?: { name?: string };
}
interface NewmanSummary {
  run: { stats: { assertions: { total: number; failed: number }; requests: { total: number } }; failures: NewmanFailure[] };
}
type Newman = { run(options: Record<string, unknown>, cb: (err: Error | null, summary: NewmanSummary) => void): unknown };
// newman ships no type declarations; this is the part of its API used here.
const newman = createRequire(import.meta.url)('newman') as Newman;

function runCollection(collection: string, envVars: Record<string, string>): Promise<NewmanSummary> {
  return new Promise((resolve, reject) => {
    newman.run(
      {
        collection,
        envVar: Object.entries(envVars).map(([key, value]) => ({ key, value })),
        reporters: [],
        timeoutRequest: 10_000,
      },
      (err, summary) => (err ? reject(err) : resolve(summary)),
    );
  });
}

function describeFailures(summary: NewmanSummary): string[] {
  return summary.run.failures.map((f) => `${f.source?.name ?? '?'}: ${f.error.test ?? f.error.name ?? ''} — ${f.error.message ?? ''}`);
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** A fresh store and a listening server for one suite. */
async function server(): Promise<{ store: TestStore; app: FastifyInstance; port: number }> {
  const store = await freshStore('sqlite');
  const port = await freePort();
  const app = await buildScimApp({ identities: new IdentityRepo(store.store), publicBaseUrl: `http://127.0.0.1:${port}` });
  await app.listen({ host: '127.0.0.1', port });
  return { store, app, port };
}

describe.skipIf(!present)('Okta SCIM 2.0 SPEC test (newman)', () => {
  let s: Awaited<ReturnType<typeof server>>;

  beforeAll(async () => {
    s = await server();
    // The suite's precondition: at least one user with name, userName, active and an email,
    // in the Okta source (token B) the suite then runs as.
    const res = await scim(s.app, 'POST', '/Users', user('precondition.user@example.com', { name: { givenName: 'Pre', familyName: 'Condition' } }), { token: TOKEN_B });
    expect(res.statusCode).toBe(201);
  });

  afterAll(async () => {
    await s?.app.close();
    await s?.store.cleanup();
  });

  it('passes every assertion', async () => {
    const summary = await runCollection(OKTA, { SCIMBaseURL: `http://127.0.0.1:${s.port}/scim/v2`, auth: `Bearer ${TOKEN_B}` });
    const failures = describeFailures(summary);
    expect(summary.run.stats.assertions.total).toBe(53);
    expect(failures, failures.join('\n')).toEqual([]);
    expect(summary.run.stats.assertions.failed).toBe(0);
  }, 60_000);
});

describe.skipIf(!present)("Microsoft's SCIM reference collection (newman)", () => {
  let s: Awaited<ReturnType<typeof server>>;

  // The suite's precondition: an empty user and group store (it counts users).
  beforeAll(async () => {
    s = await server();
  });

  afterAll(async () => {
    await s?.app.close();
    await s?.store.cleanup();
  });

  it('passes every assertion', async () => {
    const summary = await runCollection(ENTRA, { Protocol: 'http', Server: '127.0.0.1', Port: `:${s.port}`, Api: 'scim/v2', token: TOKEN_A });
    const failures = describeFailures(summary);
    expect(summary.run.stats.requests.total).toBe(78);
    expect(summary.run.stats.assertions.total).toBe(107);
    expect(failures, failures.join('\n')).toEqual([]);
    expect(summary.run.stats.assertions.failed).toBe(0);
  }, 60_000);
});
