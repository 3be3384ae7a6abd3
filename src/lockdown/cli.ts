/**
 * `lockstep lockdown start|status|lift`: a thin client of the admin API, for the CRO at 3 AM.
 * It talks HTTP to a running lockstep (--url or LOCKSTEP_URL, --token or LOCKSTEP_TOKEN), so it
 * goes through the same authorisation, rate limit and audit as any other caller, and shows
 * progress live from the Server-Sent Events stream.
 */

interface Figures {
  id: string;
  state: string;
  /** Null until every target has been marked and counted (the first ~100 ms). */
  markedAt: string | null;
  /** The same for the lift: null until everyone has been marked for the restore. */
  liftMarkedAt: string | null;
  perLockSystem: Record<string, { targeted: number; accepted: number; effective: number; failed: number; pending: number }>;
  exposure: { keysNotYetEffective: number; unbounded: number; latestHorizon: string | null };
  tasks: number;
  queuedPersons: number;
  lift: { perLockSystem: Record<string, { accepted: number; effective: number; failed: number; pending: number }> } | null;
}

const USAGE = `lockstep lockdown start --reason TEXT (--all | --lock-system ID... | --access NAME... | --site NAME...) [--expires-in 30m|2h] [--no-watch]
lockstep lockdown status ID [--watch]
lockstep lockdown lift ID [--no-watch]
Options: --url URL (or LOCKSTEP_URL, default http://127.0.0.1:8080), --token TOKEN (or LOCKSTEP_TOKEN; a cro token to act)`;

export async function lockdownCli(argv: string[], out: NodeJS.WriteStream = process.stdout): Promise<number> {
  const [sub, ...rest] = argv;
  const opt = (name: string) => {
    const i = rest.indexOf(`--${name}`);
    return i >= 0 ? rest[i + 1] : undefined;
  };
  const all = (name: string) => rest.flatMap((a, i) => (a === `--${name}` && rest[i + 1] ? [rest[i + 1]!] : []));
  const url = (opt('url') ?? process.env.LOCKSTEP_URL ?? 'http://127.0.0.1:8080').replace(/\/$/, '');
  if (!['start', 'status', 'lift'].includes(sub ?? '')) return fail(USAGE);
  const token = opt('token') ?? process.env.LOCKSTEP_TOKEN;
  if (!token) return fail(`no token: pass --token or set LOCKSTEP_TOKEN\n\n${USAGE}`);
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${url}/api/v1${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const json = (await res.json().catch(() => ({}))) as Record<string, unknown>;
    if (!res.ok) throw new Error(`${res.status} ${String(json.title ?? '')}: ${String(json.detail ?? JSON.stringify(json))}`);
    return json;
  };

  try {
    switch (sub) {
      case 'start': {
        const reason = opt('reason');
        if (!reason) return fail(`--reason is required (it goes into the incident record)\n\n${USAGE}`);
        const scope = rest.includes('--all') ? { all: true } : { lockSystems: all('lock-system'), access: all('access'), sites: all('site') };
        const expiresIn = opt('expires-in');
        const body: Record<string, unknown> = { scope, reason };
        if (expiresIn) {
          const m = /^(\d+)(m|h)$/.exec(expiresIn);
          if (!m) return fail('--expires-in takes minutes or hours, e.g. 30m or 2h');
          body.expiresAt = new Date(Date.now() + Number(m[1]) * (m[2] === 'h' ? 3_600_000 : 60_000)).toISOString();
        }
        const r = await call('POST', '/lockdowns', body);
        out.write(`${r.created ? 'LOCKDOWN STARTED' : 'lockdown already running for this scope'}: ${String(r.id)}\n`);
        if (!rest.includes('--no-watch')) await watch(url, token, String(r.id), out, 'revoke');
        return 0;
      }
      case 'status': {
        const id = rest[0];
        if (!id || id.startsWith('--')) return fail(USAGE);
        if (rest.includes('--watch')) await watch(url, token, id, out, 'revoke');
        else out.write(render((await call('GET', `/lockdowns/${id}`)) as unknown as Figures, 'revoke') + '\n');
        return 0;
      }
      case 'lift': {
        const id = rest[0];
        if (!id || id.startsWith('--')) return fail(USAGE);
        const r = await call('POST', `/lockdowns/${id}/lift`, {});
        out.write(r.state === 'lift_requested' ? `lift requested for ${id}: a second cro must confirm (dual control)\n` : `lockdown ${id} lifted; restoring access\n`);
        if (r.state === 'lifted' && !rest.includes('--no-watch')) await watch(url, token, id, out, 'lift');
        return 0;
      }
      default:
        return fail(USAGE);
    }
  } catch (err) {
    return fail(`lockdown ${sub}: ${(err as Error).message}`);
  }
}

function fail(message: string): number {
  process.stderr.write(`${message}\n`);
  return 2;
}

/** Follows the SSE stream until the phase is done (everything targeted is accepted or failed). */
async function watch(url: string, token: string, id: string, out: NodeJS.WriteStream, phase: 'revoke' | 'lift'): Promise<void> {
  const res = await fetch(`${url}/api/v1/lockdowns/${id}/events?intervalMs=500`, { headers: { authorization: `Bearer ${token}` } });
  if (!res.ok || !res.body) throw new Error(`progress stream: HTTP ${res.status}`);
  const decoder = new TextDecoder();
  let buffer = '';
  let lines = 0;
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let sep: number;
    while ((sep = buffer.indexOf('\n\n')) >= 0) {
      const frame = buffer.slice(0, sep);
      buffer = buffer.slice(sep + 2);
      const data = frame.split('\n').find((l) => l.startsWith('data: '));
      if (!data) continue;
      const f = JSON.parse(data.slice(6)) as Figures;
      const text = render(f, phase);
      // Redraw in place on a terminal; plain lines in a log.
      if (out.isTTY && lines) out.write(`\x1b[${lines}A\x1b[0J`);
      out.write(`${text}\n`);
      lines = text.split('\n').length;
      if (done(f, phase)) return;
    }
  }
}

/** Done when nobody is left to plan and nothing planned is still on its way. */
function done(f: Figures, phase: 'revoke' | 'lift'): boolean {
  if (f.queuedPersons > 0 || !f.markedAt) return false;
  if (phase === 'lift') return f.lift !== null && Boolean(f.liftMarkedAt) && Object.values(f.lift.perLockSystem).every((c) => c.pending === 0);
  return Object.values(f.perLockSystem).every((c) => c.pending === 0);
}

export function render(f: Figures, phase: 'revoke' | 'lift'): string {
  const bar = (part: number, whole: number) => {
    const share = whole ? Math.min(1, part / whole) : 1;
    const filled = Math.round(share * 24);
    return `[${'#'.repeat(filled)}${'.'.repeat(24 - filled)}] ${String(Math.round(share * 100)).padStart(3)}%`;
  };
  const rows = [`lockdown ${f.id}  state: ${f.state}`];
  if (phase === 'lift' && f.lift) {
    for (const [ls, c] of Object.entries(f.lift.perLockSystem)) rows.push(`  ${ls.padEnd(12)} restored ${c.accepted}  pending ${c.pending}  failed ${c.failed}`);
  } else {
    for (const [ls, c] of Object.entries(f.perLockSystem))
      rows.push(`  ${ls.padEnd(12)} ${bar(c.accepted + c.failed, c.targeted)}  accepted ${c.accepted}/${c.targeted}  effective ${c.effective}  failed ${c.failed}`);
  }
  const e = f.exposure;
  rows.push(`  exposure: ${e.keysNotYetEffective} key(s) not yet effective${e.unbounded ? `, ${e.unbounded} without a bound` : e.latestHorizon ? `, all stop working by ${e.latestHorizon}` : ''}; manual tasks: ${f.tasks}`);
  return rows.join('\n');
}
