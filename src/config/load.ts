import { readFileSync } from 'node:fs';
import { isPair, isScalar, isSeq, parseDocument, Scalar, visit } from 'yaml';
import type { z } from 'zod';
import { configSchema, type Config } from './schema.ts';

/**
 * Loads the one YAML file. `${VAR}` and `${VAR:-default}` are replaced from the environment
 * inside string values after parsing (never in the raw text, so a secret containing YAML
 * syntax cannot change the document's shape). A value that is exactly one reference to a
 * number or boolean becomes that number or boolean, so `port: ${PORT}` works.
 */

export class ConfigError extends Error {
  readonly problems: string[];
  constructor(file: string, problems: string[]) {
    super(`invalid configuration in ${file}:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

const REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

export function resolveConfigPath(argv: string[], env: NodeJS.ProcessEnv = process.env): string | undefined {
  const i = argv.indexOf('--config');
  if (i >= 0) return argv[i + 1];
  const eq = argv.find((a) => a.startsWith('--config='));
  if (eq) return eq.slice('--config='.length);
  return env.LOCKSTEP_CONFIG;
}

export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, [`cannot read the file: ${(err as Error).message}`]);
  }
  return parseConfig(text, file, env);
}

export function parseConfig(text: string, file = '<config>', env: NodeJS.ProcessEnv = process.env): Config {
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length) throw new ConfigError(file, doc.errors.map((e) => `YAML: ${e.message.split('\n')[0]}`));
  const problems: string[] = [];
  // Interpolate on the syntax tree, so a quoted "${PW}" stays a string whatever PW holds
  // (a numeric password or a customer code like 0042), while a plain ${PORT} may be a number.
  visit(doc, {
    Scalar(key, node, ancestors) {
      if (key === 'key' || typeof node.value !== 'string' || !node.value.includes('${')) return;
      node.value = interpolate(node.value, node.type === Scalar.PLAIN, pathOf(ancestors, node), env, problems);
    },
  });
  if (problems.length) throw new ConfigError(file, problems);
  const parsed = configSchema.safeParse(doc.toJS() ?? {});
  if (!parsed.success) throw new ConfigError(file, formatIssues(parsed.error.issues));
  return parsed.data;
}

function interpolate(value: string, plain: boolean, path: (string | number)[], env: NodeJS.ProcessEnv, problems: string[]): unknown {
  const lookup = (name: string, dflt: string | undefined) => {
    const v = env[name];
    if (v !== undefined && v !== '') return v;
    if (dflt !== undefined) return dflt;
    problems.push(`${fmtPath(path)}: environment variable ${name} is not set`);
    return '';
  };
  const whole = /^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}$/.exec(value);
  if (whole && plain) {
    const v = lookup(whole[1]!, whole[2]);
    if (/^-?\d+(\.\d+)?$/.test(v)) return Number(v);
    if (v === 'true' || v === 'false') return v === 'true';
    return v;
  }
  return value.replace(REF, (_m, name: string, dflt: string | undefined) => lookup(name, dflt));
}

/** The config path (as zod reports it) of a node, from the YAML ancestors visit() passes. */
function pathOf(ancestors: readonly unknown[], node: unknown): (string | number)[] {
  const path: (string | number)[] = [];
  const chain = [...ancestors, node];
  chain.forEach((a, i) => {
    if (isPair(a)) path.push(String(isScalar(a.key) ? a.key.value : a.key));
    else if (isSeq(a)) path.push(a.items.indexOf(chain[i + 1] as never));
  });
  return path;
}

function formatIssues(issues: z.core.$ZodIssue[]): string[] {
  return issues.map((i) => {
    let msg = i.message;
    if (i.code === 'unrecognized_keys') msg = `unknown key(s) ${i.keys.map((k) => `"${k}"`).join(', ')} (check the spelling; see docs/configuration.md)`;
    return `${fmtPath(i.path as (string | number)[])}: ${msg}`;
  });
}

function fmtPath(path: (string | number)[]): string {
  if (path.length === 0) return '(root)';
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');
}
