import { describe, expect, it } from 'vitest';
import { HOOK_ROUTES } from '../../adapters/idp/index.ts';
import { HOOK_ROUTE_TABLE } from '../../src/http/hooks.ts';

describe('hook routes', () => {
  it('mounts exactly the routes the adapters document (HOOK_ROUTES)', () => {
    expect(HOOK_ROUTE_TABLE).toEqual(HOOK_ROUTES);
  });
});
