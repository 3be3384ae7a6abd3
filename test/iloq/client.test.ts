import { afterEach, describe, expect, it } from 'vitest';
import { IloqClient, parseRetryAfter } from '../../adapters/locks/iloq/client.ts';
import { startIloqSimulator, type IloqSimulator, type IloqSimulatorOptions } from '../../adapters/locks/iloq/simulator.ts';
import { LockSystemError } from '../../src/ports/lock-system.ts';

let sim: IloqSimulator | undefined;
let client: IloqClient | undefined;

afterEach(async () => {
  await client?.close();
  await sim?.close();
  client = undefined;
  sim = undefined;
});

async function setup(simOpts: IloqSimulatorOptions = {}, clientOpts: Partial<ConstructorParameters<typeof IloqClient>[0]> = {}) {
  sim = await startIloqSimulator(simOpts);
  client = new IloqClient({
    serverUrl: sim.url,
    customerCode: sim.credentials.customerCode,
    userName: sim.credentials.userName,
    password: sim.credentials.password,
    requestTimeoutMs: 2_000,
    ...clientOpts,
  });
  return { sim, client };
}

async function failure(p: Promise<unknown>): Promise<LockSystemError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(LockSystemError);
  return err as LockSystemError;
}

describe('iLOQ client: login', () => {
  it('resolves the pool URL with GetUrl and runs the whole session flow there', async () => {
    const { sim, client } = await setup();
    const session = await client.login();
    expect(session.baseUrl).toBe(sim.poolUrl.replace(/\/$/, ''));
    expect(session.lockGroup.Name).toBe('Simulated locking system');
    expect(session.rightsMask).toBeGreaterThan(0);
    const calls = sim.requests.map((r) => `${r.method} ${r.path} ${r.status}`);
    expect(calls).toEqual([
      'POST /iloqws/api/v2/Url/GetUrl 200',
      'POST /iloqwspool/api/v2/CreateSession 200',
      'GET /iloqwspool/api/v2/LockGroups 200',
      'POST /iloqwspool/api/v2/SetLockgroup 200',
    ]);
    expect(await client.get('/api/v2/Test')).toBe('Test OK');
    expect(sim.state.sessions.size).toBe(1);
  });

  it('keeps the configured URL when GetUrl answers an empty string', async () => {
    const { sim, client } = await setup({ pool: false });
    const session = await client.login();
    expect(session.baseUrl).toBe(sim.url);
    expect(sim.requests.every((r) => r.path.startsWith('/iloqws/'))).toBe(true);
  });

  it('shares one login between concurrent calls', async () => {
    const { sim, client } = await setup();
    await Promise.all(Array.from({ length: 20 }, () => client.get('/api/v2/Test')));
    expect(sim.countRequests('POST', '/CreateSession')).toBe(1);
    expect(sim.countRequests('GET', '/api/v2/Test')).toBe(20);
  });

  it('maps invalid credentials (Result 5) to an auth error without leaking the password', async () => {
    const { client } = await setup({}, { password: 'wrong-secret-123' });
    const err = await failure(client.login());
    expect(err.kind).toBe('auth');
    expect(err.message).toMatch(/invalid credentials/);
    expect(err.message).not.toContain('wrong-secret-123');
  });

  it('maps "database update in progress" (Result 4) to retryable and other results to permanent', async () => {
    const { sim, client } = await setup();
    sim.setFaults({ forceLoginResult: 4 });
    expect((await failure(client.login())).kind).toBe('retryable');
    sim.setFaults({ forceLoginResult: 6 });
    expect((await failure(client.login())).kind).toBe('permanent');
    sim.setFaults({ forceLoginResult: 7 });
    expect((await failure(client.login())).kind).toBe('auth');
    sim.setFaults({ forceLoginResult: null });
    await client.login();
  });

  it('needs lockGroupId when the user sees several lock groups', async () => {
    const { sim } = await setup({ lockGroups: [{ Name: 'North' }, { Name: 'South' }] });
    const err = await failure(client!.login());
    expect(err.kind).toBe('permanent');
    expect(err.message).toMatch(/sees 2 lock groups.*North.*South/);

    const south = sim.state.lockGroups[1]!;
    const chosen = new IloqClient({ ...baseOpts(sim), lockGroupId: south.LockGroup_ID.toUpperCase() });
    try {
      expect((await chosen.login()).lockGroup.Name).toBe('South');
    } finally {
      await chosen.close();
    }
    const missing = new IloqClient({ ...baseOpts(sim), lockGroupId: '00000000-0000-0000-0000-000000000000' });
    expect((await failure(missing.login())).kind).toBe('permanent');
    await missing.close();
  });

  it('sends x-api-key when configured', async () => {
    const { sim } = await setup({ apiKey: 'gateway-key' });
    expect((await failure(client!.login())).kind).toBe('auth');
    const withKey = new IloqClient({ ...baseOpts(sim), apiKey: 'gateway-key' });
    try {
      expect(await withKey.get('/api/v2/Test')).toBe('Test OK');
    } finally {
      await withKey.close();
    }
  });
});

describe('iLOQ client: errors', () => {
  it('maps 429 to rate_limited with Retry-After in seconds or as an HTTP date', async () => {
    const { sim, client } = await setup();
    await client.login();
    sim.setFaults({ rateLimitNext: 1, retryAfterSeconds: 7 });
    const err = await failure(client.get('/api/v2/Test'));
    expect(err.kind).toBe('rate_limited');
    expect(err.status).toBe(429);
    expect(err.retryAfterMs).toBe(7_000);

    sim.setFaults({ rateLimitNext: 1, retryAfterSeconds: 30, retryAfterAsDate: true });
    const dated = await failure(client.get('/api/v2/Test'));
    expect(dated.kind).toBe('rate_limited');
    expect(dated.retryAfterMs).toBeGreaterThan(25_000);
    expect(dated.retryAfterMs).toBeLessThanOrEqual(30_000);

    expect(await client.get('/api/v2/Test')).toBe('Test OK');
  });

  it('maps 503 to retryable (with Retry-After) and recovers when the window closes', async () => {
    const { sim, client } = await setup();
    await client.login();
    sim.setFaults({ unavailableForMs: 150, retryAfterSeconds: 2 });
    const err = await failure(client.get('/api/v2/Test'));
    expect(err.kind).toBe('retryable');
    expect(err.status).toBe(503);
    expect(err.retryAfterMs).toBe(2_000);
    await new Promise((r) => setTimeout(r, 200));
    expect(await client.get('/api/v2/Test')).toBe('Test OK');
  });

  it('maps timeouts and refused connections to retryable', async () => {
    const s = (await setup()).sim;
    const slow = new IloqClient({ ...baseOpts(s), requestTimeoutMs: 100 });
    await slow.login();
    s.setFaults({ latencyMs: 400 });
    const err = await failure(slow.get('/api/v2/Test'));
    expect(err.kind).toBe('retryable');
    expect(err.message).toMatch(/timed out/);
    s.setFaults({ latencyMs: 0 });
    await slow.close();

    const port = s.port;
    await s.close();
    sim = undefined;
    const dead = new IloqClient({ ...baseOpts({ url: `http://127.0.0.1:${port}/iloqws` }), requestTimeoutMs: 500 });
    expect((await failure(dead.login())).kind).toBe('retryable');
    await dead.close();
  });

  it('maps other 4xx answers to permanent with the server message', async () => {
    const { client } = await setup();
    const err = await failure(client.get('/api/v2/Persons/11111111-2222-3333-4444-555555555555'));
    expect(err.kind).toBe('permanent');
    expect(err.status).toBe(400);
    expect(err.message).toMatch(/Invalid value/);
  });
});

describe('iLOQ client: session expiry and close', () => {
  it('logs in again once when the session expired, then succeeds', async () => {
    const { sim, client } = await setup();
    await client.login();
    sim.expireSessions();
    const results = await Promise.all(Array.from({ length: 5 }, () => client.get('/api/v2/Test')));
    expect(results).toEqual(Array(5).fill('Test OK'));
    expect(sim.countRequests('POST', '/CreateSession')).toBe(2);
    expect(sim.requests.filter((r) => r.status === 401).length).toBeGreaterThanOrEqual(1);
  });

  it('turns a rejection right after a fresh login into an auth error', async () => {
    const { sim, client } = await setup();
    await client.login();
    sim.expireSessions();
    sim.setFaults({ rejectCredentials: true });
    const err = await failure(client.get('/api/v2/Test'));
    expect(err.kind).toBe('auth');
  });

  it('kills the session on close', async () => {
    const { sim, client } = await setup();
    await client.login();
    expect(sim.state.sessions.size).toBe(1);
    await client.close();
    expect(sim.state.sessions.size).toBe(0);
    expect(sim.countRequests('GET', '/api/v2/KillSession')).toBe(1);
    expect((await failure(client.get('/api/v2/Test'))).kind).toBe('retryable');
  });
});

describe('parseRetryAfter', () => {
  it('reads delta-seconds and HTTP dates', () => {
    const now = Date.parse('2025-01-01T00:00:00Z');
    expect(parseRetryAfter('3', now)).toBe(3_000);
    expect(parseRetryAfter('Wed, 01 Jan 2025 00:00:10 GMT', now)).toBe(10_000);
    expect(parseRetryAfter('Tue, 31 Dec 2024 23:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
  });
});

function baseOpts(s: Pick<IloqSimulator, 'url'> & Partial<Pick<IloqSimulator, 'credentials'>>) {
  return {
    serverUrl: s.url,
    customerCode: s.credentials?.customerCode ?? 'DEMO',
    userName: s.credentials?.userName ?? 'lockstep',
    password: s.credentials?.password ?? 'lockstep-sim',
    requestTimeoutMs: 2_000,
  };
}
