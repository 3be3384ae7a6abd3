import { createHash } from 'node:crypto';
import type { SourceGroup, SourceUser } from '../ports/identity-source.ts';
import type { GroupInput, Profile, UserInput } from '../store/identities.ts';

/**
 * SourceUser / SourceGroup → the identity store's inputs, and the hashes that decide whether a
 * confirmed record changed anything. Pure.
 *
 * The hashes cover only what policy and the lock systems can see (names, e-mail, active, roles,
 * attributes, external id), never the vendor's raw object: Okta's `lastLogin` or Graph's
 * `@odata` noise must not rewrite a person (and mark them dirty) on every read. The stored
 * `resource` is therefore refreshed whenever a relevant field changes, not on every read.
 */

export function toUserInput(u: SourceUser): UserInput {
  const profile: Profile = { roles: [...u.roles], attributes: { ...u.attributes } };
  if (u.givenName !== undefined) profile.givenName = u.givenName;
  if (u.familyName !== undefined) profile.familyName = u.familyName;
  if (u.email !== undefined) profile.email = u.email;
  return {
    userName: u.userName,
    externalId: u.externalId ?? null,
    displayName: u.displayName ?? null,
    active: u.active,
    email: u.email ?? null,
    profile,
    resource: u.raw,
  };
}

export function toGroupInput(g: Pick<SourceGroup, 'id' | 'displayName' | 'externalId'> & { raw?: Record<string, unknown> }): GroupInput {
  return { displayName: g.displayName, externalId: g.externalId ?? g.id, resource: g.raw ?? { id: g.id, displayName: g.displayName } };
}

/** Hash of the policy-relevant part of a user input. */
export function userHash(input: UserInput): string {
  return hash([
    input.userName,
    input.externalId ?? null,
    input.displayName ?? null,
    input.active,
    input.email ?? null,
    input.profile.givenName ?? null,
    input.profile.familyName ?? null,
    input.profile.email ?? null,
    [...input.profile.roles].sort(),
    sortedEntries(input.profile.attributes),
  ]);
}

export function groupHash(input: GroupInput): string {
  return hash([input.displayName, input.externalId ?? null]);
}

/** Hash of a set of ids (member lists). */
export function idsHash(ids: Iterable<string>): string {
  return hash([...ids].sort());
}

/**
 * The value records are linked on (`identity.matchOn`): `email`, `userName`, `externalId`, or a
 * mapped attribute name. Trimmed and lower-cased; null when absent or empty (never linked).
 */
export function matchKey(u: Pick<SourceUser, 'email' | 'userName' | 'externalId' | 'attributes'>, matchOn: string | undefined): string | null {
  if (!matchOn) return null;
  const v = matchOn === 'email' ? u.email : matchOn === 'userName' ? u.userName : matchOn === 'externalId' ? u.externalId : u.attributes[matchOn];
  const k = typeof v === 'string' ? v.trim().toLowerCase() : '';
  return k === '' ? null : k;
}

export function hash(value: unknown): string {
  return createHash('sha256').update(JSON.stringify(value)).digest('base64url').slice(0, 32);
}

function sortedEntries(o: Record<string, string>): Array<[string, string]> {
  return Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}
