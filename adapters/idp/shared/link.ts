/** RFC 8288 `Link` header → `{ rel: url }` (Okta paging: `<…?after=…>; rel="next"`). */
export function parseLinkHeader(value: string | null | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!value) return out;
  for (const part of value.split(/,(?=\s*<)/)) {
    const m = /^\s*<([^>]*)>\s*;(.*)$/.exec(part);
    if (!m) continue;
    const rel = /rel\s*=\s*"?([^";]+)"?/i.exec(m[2] ?? '');
    if (!rel?.[1]) continue;
    for (const r of rel[1].trim().split(/\s+/)) out[r.toLowerCase()] = m[1]!;
  }
  return out;
}
