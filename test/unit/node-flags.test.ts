import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { NODE_ENV_VARS, NODE_FLAGS } from '../../src/node-flags.ts';

const root = new URL('../../', import.meta.url);
const read = (p: string) => readFileSync(new URL(p, root), 'utf8');
const flags = NODE_FLAGS.join(' ');
const env = Object.entries(NODE_ENV_VARS).map(([k, v]) => `${k}=${v}`).join(' ');

describe('the V8 heap settings and memory environment lockstep ships with are the same everywhere it starts', () => {
  it('package.json scripts that run the daemon or the CLI', () => {
    const scripts = JSON.parse(read('package.json')).scripts as Record<string, string>;
    for (const name of ['start', 'serve', 'lockstep']) expect(scripts[name], name).toMatch(new RegExp(`^${env} node ${flags} bin/lockstep\\.js\\b`));
  });

  it('the lockstep bin (shebang)', () => {
    expect(JSON.parse(read('package.json')).bin.lockstep).toBe('bin/lockstep.js');
    expect(read('bin/lockstep.js').split('\n')[0]).toBe(`#!/usr/bin/env -S ${env} node ${flags}`);
  });

  it('the container image (NODE_OPTIONS, so that an operator can override it)', () => {
    const dockerfile = read('Dockerfile');
    expect(dockerfile).toContain(`ENV NODE_OPTIONS="${flags}"`);
    for (const [k, v] of Object.entries(NODE_ENV_VARS)) expect(dockerfile).toContain(`ENV ${k}=${v}`);
    // Through the bin, with the compile cache filled at build time (bin/lockstep.js says why).
    expect(dockerfile).toContain('ENTRYPOINT ["node", "bin/lockstep.js"]');
    expect(dockerfile).toMatch(/RUN node bin\/lockstep\.js precompile\n(.*\n)*USER node/);
  });

  it('are flags Node accepts in NODE_OPTIONS', () => {
    for (const f of NODE_FLAGS) expect(process.allowedNodeEnvironmentFlags.has(f.split('=')[0]!), f).toBe(true);
  });
});
