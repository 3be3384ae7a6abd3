/**
 * Full reconciliation benchmark: 100,000 users and 2,000 groups from a local fake of Microsoft
 * Graph (users/delta and groups/delta pages, `members@delta`), read by the real Entra adapter
 * (`graphBaseUrl` pointed at the fake) and written by lockstep's snapshot (src/sources) into a
 * SQLite store.
 *
 *   node bench/reconcile-full.ts [--users 100000] [--groups 2000] [--memberships 3] [--node-defaults]
 *
 * It re-runs itself with lockstep's heap settings (src/node-flags.ts) unless --node-defaults.
 *
 * Three rounds: (1) initial load into an empty store, (2) the same tenant again (no change),
 * (3) 1 % drift (1,000 users changed, 100 removed, 100 new, ~100 membership changes). Each is
 * one `runSnapshot` of the EntraSource, as the `sources` worker runs it. The fake Graph runs in a
 * child process (this file with --graph-server) on http://127.0.0.1 and an ephemeral port (the
 * adapter follows `@odata.nextLink`/`deltaLink` on any scheme and port of its graphBaseUrl). The
 * Entra token endpoint is answered by nock in this process (MSAL accepts only HTTPS authorities)
 * once, before the rounds; nock is then removed so that it does not sit on the Graph traffic.
 * The reconcile/apply queues are not part of this figure (no workers run; the dirty marks the
 * load writes are left for them).
 *
 * Results are printed and appended to bench/sources-results.md.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:http';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { cpus, loadavg, totalmem, tmpdir } from 'node:os';
import { join } from 'node:path';
import { NODE_ENV_VARS, NODE_FLAGS } from '../src/node-flags.ts';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const USERS = arg('users', 100_000);
const GROUPS = arg('groups', 2_000);
const PER_USER = arg('memberships', 3);
const ROOT = new URL('../', import.meta.url).pathname;
const TENANT = 'bf4b5b1e-7f3e-4b0a-9c29-4d1b7d0e6a11';

// ---------------------------------------------------------------- fake Graph (child process)

function uid(i: number): string {
  const h = i.toString(16).padStart(12, '0');
  return `6e7b768e-07e2-4810-8459-${h}`;
}
function gid(g: number): string {
  const h = g.toString(16).padStart(12, '0');
  return `02bd9fd6-8f93-4758-87c3-${h}`;
}

function graphServer(): void {
  let gen = 1;
  const userPage = 999;
  const groupPage = 100;
  /** Users of a generation: index → present, with which department. */
  const users = (): number[] => {
    const out: number[] = [];
    for (let i = 0; i < USERS; i++) if (!(gen >= 2 && i % 1000 === 2)) out.push(i);
    if (gen >= 2) for (let i = USERS; i < USERS + 100; i++) out.push(i);
    return out;
  };
  const groupsOf = (i: number): number[] => {
    const gs = new Set<number>();
    for (let k = 0; k < PER_USER; k++) gs.add((i * (7 + 6 * k) + 3 * k) % GROUPS);
    if (gen >= 2 && i % 1000 === 3) gs.add((i * 17 + 1) % GROUPS);
    return [...gs];
  };
  let members: number[][] = [];
  let list: number[] = [];
  const rebuild = () => {
    list = users();
    members = Array.from({ length: GROUPS }, () => []);
    for (const i of list) for (const g of groupsOf(i)) members[g]!.push(i);
  };
  rebuild();
  const user = (i: number) => ({
    id: uid(i),
    userPrincipalName: `user${i}@contoso.example`,
    mailNickname: `user${i}`,
    displayName: `User ${i}`,
    givenName: 'User',
    surname: String(i),
    mail: `user${i}@contoso.example`,
    accountEnabled: !(i % 500 === 7),
    department: gen >= 2 && i % 100 === 1 ? `Moved ${i % 50}` : `Dept ${i % 50}`,
    jobTitle: 'Engineer',
    employeeId: `E-${i}`,
    employeeType: 'Employee',
    companyName: 'Contoso',
    officeLocation: `Site ${i % 20}`,
    userType: 'Member',
  });
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const origin = `http://${req.headers.host}`;
    const send = (body: unknown) => {
      const s = JSON.stringify(body);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s) });
      res.end(s);
    };
    if (url.pathname === '/_gen') {
      gen = Number(url.searchParams.get('gen'));
      rebuild();
      return send({ gen, users: list.length });
    }
    if (url.pathname === '/v1.0/users/delta') {
      const page = Number(url.searchParams.get('$skiptoken') ?? 0);
      const slice = list.slice(page * userPage, (page + 1) * userPage);
      const last = (page + 1) * userPage >= list.length;
      return send({
        '@odata.context': `${origin}/v1.0/$metadata#users`,
        value: slice.map(user),
        ...(last ? { '@odata.deltaLink': `${origin}/v1.0/users/delta?$deltatoken=u${gen}` } : { '@odata.nextLink': `${origin}/v1.0/users/delta?$skiptoken=${page + 1}` }),
      });
    }
    if (url.pathname === '/v1.0/groups/delta') {
      const page = Number(url.searchParams.get('$skiptoken') ?? 0);
      const from = page * groupPage;
      const to = Math.min(GROUPS, from + groupPage);
      const value = [];
      for (let g = from; g < to; g++)
        value.push({ id: gid(g), displayName: `Group ${g}`, 'members@delta': members[g]!.map((i) => ({ '@odata.type': '#microsoft.graph.user', id: uid(i) })) });
      const last = to >= GROUPS;
      return send({
        value,
        ...(last ? { '@odata.deltaLink': `${origin}/v1.0/groups/delta?$deltatoken=g${gen}` } : { '@odata.nextLink': `${origin}/v1.0/groups/delta?$skiptoken=${page + 1}` }),
      });
    }
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: { code: 'Request_ResourceNotFound', message: url.pathname } }));
  });
  server.listen(arg('graph-port', 0), '127.0.0.1', () => {
    const addr = server.address() as { port: number };
    process.stdout.write(`PORT ${addr.port}\n`);
  });
}

// ---------------------------------------------------------------- benchmark (this process)

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'lockstep-reconcile-bench-'));
  const child: ChildProcess = spawn(process.execPath, [new URL(import.meta.url).pathname, '--graph-server', '--users', String(USERS), '--groups', String(GROUPS), '--memberships', String(PER_USER)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /PORT (\d+)/.exec(buf);
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', (code) => reject(new Error(`graph server exited ${code}`)));
  });
  const graph = `http://127.0.0.1:${port}`;

  // The token endpoint: the only call nock answers; everything to 127.0.0.1 passes through.
  const { default: nock } = await import('nock');
  nock.disableNetConnect();
  nock.enableNetConnect(/127\.0\.0\.1/);
  nock('https://login.microsoftonline.com')
    .persist()
    .post(`/${TENANT}/oauth2/v2.0/token`)
    .query(true)
    .reply(200, { token_type: 'Bearer', expires_in: 3599, ext_expires_in: 3599, access_token: 'bench-token' });

  const { configSchema } = await import('../src/config/schema.ts');
  const { createLogger } = await import('../src/log.ts');
  const { openStore } = await import('../src/store/db.ts');
  const { IdentityRepo } = await import('../src/store/identities.ts');
  const { SourceSync } = await import('../src/sources/sync.ts');
  const { runSnapshot } = await import('../src/sources/snapshot.ts');
  const { createEntraSource } = await import('../adapters/idp/entra/index.ts');

  const dbPath = join(dir, 'lockstep.db');
  const entra = {
    tenantId: TENANT,
    clientId: '24d3b144-21ae-4080-943f-7067b395b913',
    credential: { type: 'secret', clientSecret: 'bench' },
    hook: { clientState: 'bench-client-state-0123456789' },
    graphBaseUrl: graph,
    delta: { maxPages: 1000 },
  };
  const config = configSchema.parse({ store: { driver: 'sqlite', sqlite: { path: dbPath } }, sources: [{ id: 'entra', idp: 'entra', entra }] });
  const log = createLogger('warn');
  const store = openStore(config.store);
  await store.migrate();
  const identities = new IdentityRepo(store);
  const sync = new SourceSync({ store, identities, config, log });
  const source = createEntraSource(entra as never, { sourceId: 'entra', log });

  // Take the token once (MSAL caches it for its lifetime), then remove nock entirely: its
  // interceptor would otherwise sit on every Graph response of the run.
  await source.readUser('token-warm-up');
  nock.restore();
  nock.cleanAll();
  nock.enableNetConnect();
  const rows: string[] = [];
  const load = loadavg()[0]!;
  const baseRss = process.memoryUsage().rss;
  let peakRss = 0;
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 50);
  sampler.unref();
  const round = async (name: string, gen: number) => {
    await fetch(`${graph}/_gen?gen=${gen}`);
    const before = process.resourceUsage();
    const t0 = performance.now();
    const s = await runSnapshot({ source, sync, identities, store, log, ctx: { actor: 'source:entra', correlationId: `bench-${name}` } });
    const ms = performance.now() - t0;
    const after = process.resourceUsage();
    const cpu = (after.userCPUTime + after.systemCPUTime - before.userCPUTime - before.systemCPUTime) / 1000;
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
    const line = `| ${name} | ${(ms / 1000).toFixed(1)} s | ${Math.round((s.users.seen / ms) * 1000).toLocaleString('en')} | ${s.users.created}/${s.users.updated}/${s.users.removed}/${s.users.unchanged} | ${s.groups.created}/${s.groups.membershipsChanged}/${s.groups.removed} | ${(cpu / 1000).toFixed(1)} s | ${(peakRss / 2 ** 20).toFixed(0)} MB |`;
    const mem = process.memoryUsage();
    console.log(line, s.complete ? '' : `INCOMPLETE ${s.error}`, `heapUsed ${(mem.heapUsed / 2 ** 20).toFixed(0)} MB, heapTotal ${(mem.heapTotal / 2 ** 20).toFixed(0)} MB, external ${(mem.external / 2 ** 20).toFixed(0)} MB`);
    rows.push(line);
    return s;
  };
  await round('1 initial load', 1);
  await round('2 unchanged', 1);
  await round('3 one percent drift', 2);
  clearInterval(sampler);
  const maxRss = process.resourceUsage().maxRSS * 1024;
  const dbSize = statSync(dbPath).size + (statSync(`${dbPath}-wal`, { throwIfNoEntry: false })?.size ?? 0);
  await store.close();
  child.kill();
  rmSync(dir, { recursive: true, force: true });

  const versions = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')).packages as Record<string, { version: string }>;
  const v = (p: string) => versions[`node_modules/${p}`]?.version ?? '?';
  const text = [
    '',
    `### ${new Date().toISOString()} — full reconciliation from a fake Graph (node bench/reconcile-full.ts)`,
    '',
    `Machine: ${cpus()[0]?.model ?? '?'} × ${cpus().length}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, load average at start ${load.toFixed(2)}; Node ${process.version}${process.execArgv.length ? ` with ${process.execArgv.join(' ')}` : ' (default heap limits)'}; SQLite store (WAL) in ${tmpdir()}; kysely ${v('kysely')}, @microsoft/microsoft-graph-client ${v('@microsoft/microsoft-graph-client')}, @azure/identity ${v('@azure/identity')}.`,
    `Tenant: ${USERS.toLocaleString('en')} users, ${GROUPS.toLocaleString('en')} groups, ${PER_USER} direct memberships per user (${(USERS * PER_USER).toLocaleString('en')}); users/delta pages of 999, groups/delta pages of 100 groups with their members@delta. Fake Graph in a child process (not counted in RSS). No reconcile/apply workers ran.`,
    '',
    '| round | wall time | users/s | users created/updated/removed/unchanged | groups created/membership changes/removed | CPU (this process) | peak RSS so far |',
    '|---|---:|---:|---|---|---:|---:|',
    ...rows,
    '',
    `Peak RSS (getrusage maxRSS): ${(maxRss / 2 ** 20).toFixed(0)} MB (${(baseRss / 2 ** 20).toFixed(0)} MB before the first round: modules, SDKs, nock, SQLite cache). Database after the three rounds: ${(dbSize / 2 ** 20).toFixed(0)} MB. Targets: full reconciliation of 100,000 users and 2,000 groups < 60 s, peak RSS < 512 MB.`,
    '',
  ].join('\n');
  appendFileSync(join(ROOT, 'bench/sources-results.md'), text);
  console.log(text);
}

if (process.argv.includes('--graph-server')) graphServer();
else if (!process.argv.includes('--node-defaults') && !NODE_FLAGS.every((f) => process.execArgv.includes(f))) {
  // The snapshot runs in this process: run it with the heap settings lockstep ships with
  // (--node-defaults measures V8's defaults instead).
  const again = spawn(process.execPath, [...NODE_FLAGS, ...process.execArgv, ...process.argv.slice(1)], { stdio: 'inherit', env: { ...process.env, ...NODE_ENV_VARS } });
  again.on('exit', (code) => process.exit(code ?? 1));
} else
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
