import { hash, timingSafeEqual } from 'node:crypto';
import type { SourceConfig } from '../../config/schema.ts';
import { ScimHttpError } from './errors.ts';

/** A source that may use SCIM: it has a token digest and a rate limit. */
export interface ScimTenant {
  sourceId: string;
  /** Which IdP the source is; decides the few response choices RFC 7644 leaves open (see routes.ts). */
  idp: SourceConfig['idp'];
  rateLimitPerSecond: number;
}

interface Entry {
  tenant: ScimTenant;
  digest: Buffer;
}

/**
 * Resolves `Authorization: Bearer <token>` to the source whose configured SHA-256 digest
 * matches. Only digests are held; the comparison is constant-time and runs against every
 * source, so the time taken does not reveal which (or whether a) source matched.
 */
export class TokenAuthenticator {
  private readonly entries: Entry[];

  constructor(sources: SourceConfig[]) {
    this.entries = sources.flatMap((s) =>
      s.scim ? [{ tenant: { sourceId: s.id, idp: s.idp, rateLimitPerSecond: s.scim.rateLimitPerSecond }, digest: Buffer.from(s.scim.tokenSha256, 'hex') }] : [],
    );
  }

  /** Throws a 401 ScimHttpError for a missing, malformed or unknown token. */
  authenticate(authorization: string | undefined): ScimTenant {
    const challenge = { 'WWW-Authenticate': 'Bearer realm="lockstep-scim"' };
    if (!authorization) throw new ScimHttpError(401, undefined, 'Authorization header with a Bearer token is required', challenge);
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    if (!m) throw new ScimHttpError(401, undefined, 'Authorization must use the Bearer scheme', challenge);
    const presented = hash('sha256', m[1]!, 'buffer');
    let found: ScimTenant | undefined;
    for (const e of this.entries) {
      if (e.digest.length === presented.length && timingSafeEqual(e.digest, presented) && !found) found = e.tenant;
    }
    if (!found) throw new ScimHttpError(401, undefined, 'The bearer token is not valid for any source', challenge);
    return found;
  }
}

/** Hex SHA-256 of a token, as configured in sources[].scim.tokenSha256. */
export function hashToken(token: string): string {
  return hash('sha256', token, 'hex');
}
