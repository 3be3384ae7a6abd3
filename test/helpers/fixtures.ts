import { parseConfig } from '../../src/config/load.ts';
import type { Config } from '../../src/config/schema.ts';
import type { UserInput } from '../../src/store/identities.ts';

export const ctx = { actor: 'source:test', correlationId: 'corr-1' };

export function user(userName: string, extra: Partial<UserInput> = {}): UserInput {
  return {
    userName,
    active: true,
    externalId: null,
    displayName: userName,
    email: userName,
    profile: { givenName: 'Ada', familyName: 'Lovelace', email: userName, roles: [], attributes: {} },
    resource: { userName },
    ...extra,
  };
}

/** A minimal valid config with one iLOQ system and two rules; override with a YAML fragment's object. */
export function testConfig(overrides: Partial<Config> = {}): Config {
  const base = parseConfig(
    `
lockSystems:
  - id: iloq
    kind: iloq
    iloq: { serverUrl: "http://127.0.0.1:1/iloqws", customerCode: DEMO, userName: api, password: secret }
policy:
  rules:
    - name: control-room
      when: { groups: [Control Room] }
      grant: [{ lockSystem: iloq, access: [Control room] }]
    - name: plant-a
      when: { attributes: { site: Plant A } }
      grant: [{ lockSystem: iloq, access: [Main entrance] }]
`,
    'test',
    {},
  );
  return { ...base, ...overrides };
}
