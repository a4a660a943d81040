import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // End-to-end tests spawn real CLI processes and write real archives; keep the
    // two cores for them rather than oversubscribing.
    maxWorkers: 2,
  },
});
