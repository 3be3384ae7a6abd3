import { createHash, timingSafeEqual } from 'node:crypto';
import type { AdminRole, Config } from '../config/schema.ts';

/**
 * Admin tokens are configured as SHA-256 digests; a presented token is hashed and compared in
 * constant time against every configured digest (no early exit on the first match, so timing
 * does not reveal which entry matched or how many exist).
 */

export type Permission =
  | 'persons:read'
  | 'jobs:read'
  | 'jobs:retry'
  | 'audit:read'
  | 'reconcile:request'
  | 'metrics:read'
  | 'exposure:read'
  | 'tasks:read'
  | 'tasks:done'
  | 'lockdown:read'
  | 'lockdown:act';

/** Least privilege: auditors read; the CRO reads state and alone acts on lockdowns; admins act on the rest. */
export const ROLE_PERMISSIONS: Record<AdminRole, ReadonlySet<Permission>> = {
  admin: new Set(['persons:read', 'jobs:read', 'jobs:retry', 'audit:read', 'reconcile:request', 'metrics:read', 'exposure:read', 'tasks:read', 'tasks:done', 'lockdown:read']),
  auditor: new Set(['persons:read', 'jobs:read', 'audit:read', 'metrics:read', 'exposure:read', 'tasks:read', 'lockdown:read']),
  // Only the CRO starts, extends (exemptions) and lifts lockdowns.
  cro: new Set(['persons:read', 'metrics:read', 'exposure:read', 'tasks:read', 'lockdown:read', 'lockdown:act']),
};

export interface Principal {
  name: string;
  role: AdminRole;
}

export function sha256Hex(value: string): string {
  return createHash('sha256').update(value, 'utf8').digest('hex');
}

export function bearerToken(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m?.[1];
}

export function authenticateAdmin(tokens: Config['admin']['tokens'], header: string | undefined): Principal | undefined {
  const token = bearerToken(header);
  if (!token) return undefined;
  const presented = Buffer.from(sha256Hex(token), 'hex');
  let found: Principal | undefined;
  for (const t of tokens) {
    const match = timingSafeEqual(presented, Buffer.from(t.sha256, 'hex'));
    if (match && !found) found = { name: t.name, role: t.role };
  }
  return found;
}

export function can(principal: Principal, permission: Permission): boolean {
  return ROLE_PERMISSIONS[principal.role].has(permission);
}
