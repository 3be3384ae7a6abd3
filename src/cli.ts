import { randomBytes } from 'node:crypto';
import module from 'node:module';
import { verifyAudit } from './audit/audit.ts';
import { ConfigError, loadConfig, resolveConfigPath } from './config/load.ts';
import type { Config } from './config/schema.ts';
import { sha256Hex } from './http/admin-auth.ts';
import { createLogger } from './log.ts';
import { compileCacheFailure, precompile } from './precompile.ts';
import { StartupError, startLockstep } from './runtime.ts';
import { openStore } from './store/db.ts';

const USAGE = `lockstep — keeps physical key systems in lockstep with identity lifecycles

Usage:
  lockstep serve   [--config FILE] [--no-workers]
                                     HTTP (SCIM, admin API, health, metrics) and queue workers;
                                     --no-workers: HTTP only, with \`lockstep worker\` processes beside it
  lockstep worker  [--config FILE]   queue workers only (scale-out); serves health and metrics
  lockstep migrate [--config FILE]   apply database migrations and exit
  lockstep reconcile [--dry-run] [--json] [--limit N] [--config FILE]
                                     --dry-run: print everyone's plan (grants, revocations, tasks),
                                     apply nothing; without: reconcile everyone and every source
                                     (the running daemon carries it out)
  lockstep audit verify [--config FILE]   check the audit hash chain; exit 1 if tampered
  lockstep sim iloq [--port N]       run the iLOQ API v2 simulator alone
  lockstep sim cliq [--port N] [--token T] [--tls-dir DIR]
                                     run the CLIQ simulator (assumed CWM contract) alone
  lockstep lockdown start|status|lift  emergency lockdown through a running lockstep's API
                                     (--url/LOCKSTEP_URL, --token/LOCKSTEP_TOKEN; see lockstep lockdown)
  lockstep precompile                fill Node's compile cache with lockstep's modules (npm install
                                     and the image do it; after updating the sources in place, run it
                                     again, or the next start does the work and uses more memory)
  lockstep token                     generate an admin/SCIM token and its SHA-256 for the config
  lockstep hash-token TOKEN          print the SHA-256 of an existing token

The config file comes from --config or LOCKSTEP_CONFIG (see docs/configuration.md).`;

async function main(argv: string[]): Promise<number> {
  const [cmd, sub] = argv;
  switch (cmd) {
    case 'serve':
    case 'worker':
      return serve(argv, cmd === 'serve', !(cmd === 'serve' && argv.includes('--no-workers')));
    case 'migrate': {
      const cfg = config(argv);
      const store = openStore(cfg.store);
      try {
        const applied = await store.migrate();
        console.log(applied.length ? `applied: ${applied.join(', ')}` : 'database is up to date');
      } finally {
        await store.close();
      }
      return 0;
    }
    case 'reconcile': {
      const { reconcileCommand } = await import('./sources/cli.ts');
      return reconcileCommand(config(argv), argv);
    }
    case 'audit': {
      if (sub !== 'verify') return usage(`unknown audit command "${sub ?? ''}"`);
      const cfg = config(argv);
      const store = openStore(cfg.store);
      try {
        await store.migrate();
        const r = await verifyAudit(store.db);
        if (r.ok) {
          console.log(`audit chain intact: ${r.rows} rows verified`);
          return 0;
        }
        console.error(`audit chain BROKEN: ${r.problems.length} problem(s) in ${r.rows} rows`);
        for (const p of r.problems) console.error(`  seq ${p.seq}: ${p.problem}`);
        return 1;
      } finally {
        await store.close();
      }
    }
    case 'sim': {
      if (sub === 'cliq') {
        const { runCliqSimulatorCli } = await import('../adapters/locks/cliq/simulator.ts');
        await runCliqSimulatorCli(argv.slice(2));
        return -1;
      }
      if (sub !== 'iloq') return usage(`unknown simulator "${sub ?? ''}" (available: iloq, cliq)`);
      const { runIloqSimulatorCli } = await import('../adapters/locks/iloq/simulator.ts');
      await runIloqSimulatorCli(argv.slice(2));
      return -1;
    }
    case 'lockdown': {
      const { lockdownCli } = await import('./lockdown/cli.ts');
      return lockdownCli(argv.slice(1));
    }
    case 'precompile': {
      const r = await precompile();
      if (!r.directory) {
        // Not an error: lockstep runs without the cache, with more memory (docs/operations.md#memory).
        console.log(`compile cache off (${r.reason}): nothing to do`);
        return 0;
      }
      if (!argv.includes('--quiet') || !r.allCached)
        console.log(`${r.modules} modules ${r.allCached ? 'were all in' : 'compiled into'} the compile cache at ${r.directory}`);
      return 0;
    }
    case 'token': {
      const token = randomBytes(32).toString('base64url');
      console.log(`token:  ${token}\nsha256: ${sha256Hex(token)}\nPut the sha256 in the config; give the token to the client. It is not shown again.`);
      return 0;
    }
    case 'hash-token': {
      if (!sub) return usage('hash-token needs the token as its argument');
      console.log(sha256Hex(sub));
      return 0;
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      console.log(USAGE);
      return 0;
    default:
      return usage(`unknown command "${cmd}"`);
  }
}

function usage(problem: string): number {
  console.error(`${problem}\n\n${USAGE}`);
  return 2;
}

function config(argv: string[]): Config {
  const file = resolveConfigPath(argv);
  if (!file) throw new ConfigError('(none)', ['no config file: pass --config FILE or set LOCKSTEP_CONFIG (example: config/lockstep.example.yaml)']);
  return loadConfig(file);
}

async function serve(argv: string[], http: boolean, workers: boolean): Promise<number> {
  const cfg = config(argv);
  const log = createLogger(cfg.log.level);
  const cacheFailure = compileCacheFailure();
  if (cacheFailure) log.warn({ reason: cacheFailure }, 'compile cache unavailable: the TypeScript sources were compiled at start, which keeps ~15 MB more memory (docs/operations.md#memory)');
  const rt = await startLockstep(cfg, log, { http, workers, probes: true });
  // Node writes new compile-cache entries at exit; a daemon may never exit cleanly. Written now,
  // a start on a cold or stale cache leaves it warm for the next (a no-op when it was warm).
  module.flushCompileCache?.();
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down: no new requests; running jobs finish or are handed back');
    rt.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  return -1;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof ConfigError || err instanceof StartupError) console.error(err.message);
    else console.error(`lockstep: ${(err as Error)?.stack ?? String(err)}`);
    process.exitCode = 1;
  },
);
