import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseConfig, resolveConfigPath } from '../../src/config/load.ts';

const problems = (text: string, env: NodeJS.ProcessEnv = {}) => {
  try {
    parseConfig(text, 'x.yaml', env);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  throw new Error('expected the config to be rejected');
};

describe('config', () => {
  it('an empty file gives working defaults', () => {
    const c = parseConfig('', 'x', {});
    expect(c.store).toMatchObject({ driver: 'sqlite', sqlite: { path: './data/lockstep.db' } });
    expect(c.redis.url).toBe('redis://127.0.0.1:6379');
    expect(c.server.port).toBe(8080);
  });

  it('the SQLite page cache defaults to 8 MiB, is settable, and a bad size names its path', () => {
    expect(parseConfig('', 'x', {}).store.sqlite.cacheMB).toBe(8);
    expect(parseConfig('store: { sqlite: { cacheMB: 64 } }', 'x', {}).store.sqlite).toMatchObject({ path: './data/lockstep.db', cacheMB: 64 });
    expect(problems('store: { sqlite: { cacheMB: 1 } }').join('\n')).toMatch(/store\.sqlite\.cacheMB/);
    expect(problems('store: { sqlite: { cacheMB: "lots" } }').join('\n')).toMatch(/store\.sqlite\.cacheMB/);
  });

  it('apply concurrency defaults to 16 per lock system, with or without an apply section', () => {
    const iloq = 'id: a, kind: iloq, iloq: { serverUrl: "http://x/iloqws", customerCode: C, userName: u, password: p }';
    expect(parseConfig(`lockSystems: [{ ${iloq} }]`, 'x', {}).lockSystems[0]!.apply.concurrency).toBe(16);
    expect(parseConfig(`lockSystems: [{ ${iloq}, apply: { requestTimeoutMs: 5000 } }]`, 'x', {}).lockSystems[0]!.apply.concurrency).toBe(16);
    expect(parseConfig(`lockSystems: [{ ${iloq}, apply: { concurrency: 4 } }]`, 'x', {}).lockSystems[0]!.apply.concurrency).toBe(4);
  });

  it('interpolates ${ENV} in strings, with defaults, and types whole-value numbers', () => {
    const c = parseConfig('server:\n  port: ${PORT}\n  host: "${HOST:-0.0.0.0}"\nredis: { url: "redis://${RH}:6379" }', 'x', { PORT: '9000', RH: 'cache' });
    expect(c.server).toMatchObject({ port: 9000, host: '0.0.0.0' });
    expect(c.redis.url).toBe('redis://cache:6379');
  });

  it('a quoted reference stays a string even when the value is all digits', () => {
    const c = parseConfig('lockSystems: [{ id: a, kind: iloq, iloq: { serverUrl: "http://x/iloqws", customerCode: "${CC}", userName: u, password: "${PW}" } }]', 'x', {
      CC: '0042',
      PW: '12345678',
    });
    const ls = c.lockSystems[0]!;
    expect(ls.kind === 'iloq' && [ls.iloq.customerCode, ls.iloq.password]).toEqual(['0042', '12345678']);
  });

  it('a secret containing YAML syntax stays a plain string', () => {
    const c = parseConfig(
      'lockSystems: [{ id: a, kind: iloq, iloq: { serverUrl: "http://x/iloqws", customerCode: C, userName: u, password: "${PW}" } }]',
      'x',
      { PW: 'a: [b, {c' },
    );
    const ls = c.lockSystems[0]!;
    expect(ls.kind === 'iloq' && ls.iloq.password).toBe('a: [b, {c');
  });

  it('names each bad path and why', () => {
    const p = problems(
      `server: { port: 70000, colour: blue }
store: { driver: mysql }
lockSystems: [{ id: "Bad Id", kind: iloq, iloq: { serverUrl: "not a url", customerCode: C, userName: u } }]
admin: { tokens: [{ name: ops, sha256: "abc", role: root }] }`,
    );
    expect(p).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^server\.port: /),
        expect.stringMatching(/^server: unknown key\(s\) "colour"/),
        expect.stringMatching(/^store\.driver: /),
        expect.stringMatching(/^lockSystems\[0\]\.id: must be 1-63 characters/),
        expect.stringMatching(/^lockSystems\[0\]\.iloq\.serverUrl: /),
        expect.stringMatching(/^lockSystems\[0\]\.iloq\.password: /),
        expect.stringMatching(/^admin\.tokens\[0\]\.sha256: must be a lowercase hex SHA-256/),
        expect.stringMatching(/^admin\.tokens\[0\]\.role: /),
      ]),
    );
  });

  it('cross-checks rules against lock systems and missing environment variables', () => {
    expect(problems('policy: { rules: [{ name: r, when: { groups: [G] }, grant: [{ lockSystem: nope, access: [A] }] }] }')).toEqual([
      'policy.rules[0].grant[0].lockSystem: unknown lock system "nope" (configured: none)',
    ]);
    expect(problems('redis: { url: "${REDIS_URL}" }')).toEqual(['redis.url: environment variable REDIS_URL is not set']);
  });

  it('reports YAML syntax errors and unreadable files', () => {
    expect(problems('server: [unclosed')[0]).toMatch(/^YAML: /);
    expect(() => loadConfig('/nonexistent/lockstep.yaml')).toThrow(/cannot read the file/);
  });

  it('takes the path from --config or LOCKSTEP_CONFIG', () => {
    expect(resolveConfigPath(['serve', '--config', 'a.yaml'], {})).toBe('a.yaml');
    expect(resolveConfigPath(['serve', '--config=b.yaml'], {})).toBe('b.yaml');
    expect(resolveConfigPath(['serve'], { LOCKSTEP_CONFIG: 'c.yaml' })).toBe('c.yaml');
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    writeFileSync(join(dir, 'l.yaml'), 'log: { level: debug }');
    expect(loadConfig(join(dir, 'l.yaml')).log.level).toBe('debug');
  });
});

describe('shipped configuration files', () => {
  const root = new URL('../../', import.meta.url).pathname;
  it('config/lockstep.example.yaml is valid as shipped (what npm start runs)', () => {
    const c = loadConfig(join(root, 'config/lockstep.example.yaml'), {});
    expect(c.store.driver).toBe('sqlite');
    expect(c.simulators).toHaveLength(1);
    const ls = c.lockSystems[0]!;
    expect(ls.kind === 'iloq' && ls.iloq.serverUrl).toBe(`http://127.0.0.1:${c.simulators[0]!.port}/iloqws`);
  });
  it('docker/lockstep.yaml is valid with the environment compose sets', () => {
    const c = loadConfig(join(root, 'docker/lockstep.yaml'), {
      DATABASE_URL: 'postgres://lockstep:lockstep@postgres:5432/lockstep',
      REDIS_URL: 'redis://redis:6379',
      ILOQ_URL: 'http://iloq-sim:8090/iloqws',
      ILOQ_PASSWORD: 'lockstep-sim',
      CLIQ_URL: 'http://cliq-sim:8091/cliq-api/v1',
      CLIQ_TOKEN: 'demo-cliq-token',
    });
    expect(c.store.driver).toBe('postgres');
  });
});

describe('cross-checks', () => {
  it('rejects an empty attributes map as the only condition, unknown sources in rules and duplicate tokens', () => {
    const p = problems(`
sources: [{ id: okta, idp: okta, scim: { tokenSha256: "${'a'.repeat(64)}" } }]
lockSystems: [{ id: l, kind: iloq, iloq: { serverUrl: "http://x/iloqws", customerCode: C, userName: u, password: p } }]
policy:
  rules:
    - { name: all, when: { attributes: {} }, grant: [{ lockSystem: l, access: [A] }] }
    - { name: s, when: { sources: [entra] }, grant: [{ lockSystem: l, access: [A] }] }
admin:
  tokens:
    - { name: x, role: admin, sha256: "${'b'.repeat(64)}" }
    - { name: x, role: auditor, sha256: "${'a'.repeat(64)}" }
`);
    expect(p).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^policy\.rules\[0\]\.when: a rule needs at least one condition/),
        'policy.rules[1].when.sources[0]: unknown source "entra" (configured: okta)',
        'admin.tokens[1].name: duplicate token name "x"',
        expect.stringMatching(/^admin\.tokens\[1\]\.sha256: this token is already configured/),
      ]),
    );
  });
});
