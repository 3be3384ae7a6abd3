import type { Config } from '../config/schema.ts';
import { createLogger } from '../log.ts';
import { Reconciler } from '../reconcile/reconciler.ts';
import { openStore } from '../store/db.ts';
import { IdentityRepo } from '../store/identities.ts';
import { formatPlan, planEveryone, reconcileEveryone } from './plan.ts';

/**
 * `lockstep reconcile [--dry-run] [--json] [--limit N]`. Works on the database alone (no Redis, no
 * lock system, no IdP): the dry run plans everyone with the reconciler and writes nothing; the
 * real run marks everyone dirty (audited) and asks every API-connected source for a full
 * reconciliation, which the running daemon's workers carry out.
 */
export async function reconcileCommand(cfg: Config, argv: string[]): Promise<number> {
  const dryRun = argv.includes('--dry-run');
  const json = argv.includes('--json');
  const li = argv.indexOf('--limit');
  const limit = li >= 0 ? Number(argv[li + 1]) : 10_000;
  if (!Number.isInteger(limit) || limit < 0) {
    console.error('--limit needs a non-negative integer');
    return 2;
  }
  const store = openStore(cfg.store);
  try {
    await store.migrate();
    const identities = new IdentityRepo(store);
    if (dryRun) {
      const reconciler = new Reconciler({ store, identities, config: cfg, log: createLogger('silent') });
      const report = await planEveryone({ store, reconciler }, { limit });
      console.log(json ? JSON.stringify(report, null, 2) : formatPlan(report));
      return 0;
    }
    const sources = cfg.sources.filter((s) => s.idp !== 'generic' && s[s.idp]).map((s) => s.id);
    const r = await reconcileEveryone({ store, identities }, { actor: 'cli:reconcile', correlationId: `cli-${Date.now()}` }, sources);
    const msg = `marked ${r.persons} person(s) for reconciliation${r.sources.length ? `; full reconciliation requested for ${r.sources.join(', ')}` : ''}; a running lockstep carries it out`;
    console.log(json ? JSON.stringify({ personsMarked: r.persons, sources: r.sources }) : msg);
    return 0;
  } finally {
    await store.close();
  }
}
