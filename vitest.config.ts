import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'adapters/**/*.test.ts'],
    testTimeout: 90_000,
    hookTimeout: 30_000,
    // Integration tests start servers and workers; two cores do not gain from more forks.
    maxWorkers: 2,
    pool: 'forks',
  },
});
