/**
 * The order in which a lockdown (or its lift) hands persons to the reconcile queue: round-robin
 * over lock systems, each person once, at the place of their first lock system.
 *
 * Persons come out of the database grouped by lock system. Queued that way, every person of the
 * first lock system would be planned before the first of the second: the second system would sit
 * idle for seconds and then get all its work at once, after the first is nearly done. Taking
 * one of each in turn lets every lock system start at once and run beside the others.
 */
export function roundRobin(entries: Iterable<{ personId: string; lockSystemId: string }>): string[] {
  const bySystem = new Map<string, string[]>();
  const seen = new Set<string>();
  for (const e of entries) {
    if (seen.has(e.personId)) continue;
    seen.add(e.personId);
    let list = bySystem.get(e.lockSystemId);
    if (!list) bySystem.set(e.lockSystemId, (list = []));
    list.push(e.personId);
  }
  const lists = [...bySystem.values()];
  const out: string[] = [];
  for (let i = 0; out.length < seen.size; i++) for (const list of lists) if (i < list.length) out.push(list[i]!);
  return out;
}
