import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// Tests and the helpers only they use: what each workspace's tsconfig.test.json compiles and its
// tsconfig.json (the product) leaves out.
const testFiles = ['**/*.test.ts', '**/*.itest.ts', '**/*.ctest.ts', '**/*.torture.ts', '**/test-support.ts', '**/fixtures.ts'];

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', '.cache/**', 'charts/**', 'crds/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: {
        process: 'readonly', console: 'readonly', Buffer: 'readonly', setTimeout: 'readonly',
        clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', setImmediate: 'readonly',
        URL: 'readonly', SharedArrayBuffer: 'readonly', Atomics: 'readonly', fetch: 'readonly',
        AbortController: 'readonly', AbortSignal: 'readonly', TextEncoder: 'readonly', TextDecoder: 'readonly',
        performance: 'readonly', queueMicrotask: 'readonly',
      },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    // Test tooling stays out of the product: no module of engine/src, operator/src or csi/src but a test imports
    // the testkit, the local control plane and node simulator (e2e), or an itest/ directory. (The
    // typescript-eslint form of the rule, so the no-restricted-imports boundaries below still apply.)
    files: ['engine/src/**/*.ts', 'operator/src/**/*.ts', 'csi/src/**/*.ts'],
    ignores: [...testFiles, 'csi/src/itest/**'],
    rules: {
      '@typescript-eslint/no-restricted-imports': ['error', { patterns: [
        { group: ['@shadowset/testkit', '@shadowset/testkit/*', '**/testkit/**'], message: 'test tooling: only tests import the testkit' },
        { group: ['@shadowset/e2e', '@shadowset/e2e/*', '**/e2e/**'], message: 'the local control plane and node simulator are test tooling' },
        { group: ['**/itest', '**/itest/**'], message: 'itest/ holds tests and their tooling, which the product never imports' },
      ] }],
    },
  },
  {
    // Composition lives in engine/src/cli: the runtime executes against ports and never names an adapter
    // (its tests may use the in-memory and faulty backends).
    files: ['engine/src/runtime/**/*.ts'],
    ignores: ['engine/src/runtime/**/*.test.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['**/adapters/**'], message: 'runtime/ must not import adapters/: compose in engine/src/cli' }] }],
      // Durations come from the Clock port (monotonic), so they can be simulated and never jump.
      'no-restricted-properties': ['error',
        { object: 'Date', property: 'now', message: 'use the Clock port' },
        { object: 'performance', property: 'now', message: 'use the Clock port (monotonic)' }],
    },
  },
  {
    // The adapters and the composition measure durations through the Clock port too (ports/clock.ts is
    // the one place that reads the system's clocks).
    files: ['engine/src/adapters/**/*.ts', 'engine/src/cli/**/*.ts', 'engine/src/ports/**/*.ts'],
    ignores: ['engine/src/**/*.test.ts', 'engine/src/ports/clock.ts'],
    rules: {
      'no-restricted-properties': ['error',
        { object: 'Date', property: 'now', message: 'use the Clock port' },
        { object: 'performance', property: 'now', message: 'use the Clock port (monotonic)' }],
    },
  },
  {
    // @kubernetes/client-node stays behind operator/src/kube (its API errors are mapped there once).
    files: ['operator/src/**/*.ts'],
    ignores: ['operator/src/kube/**', 'operator/src/**/*.test.ts', 'operator/src/**/*.ctest.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['@kubernetes/client-node'], message: 'import it through operator/src/kube' }] }],
    },
  },
  {
    // The CSI driver reaches the API server through the operator's client (operator/src/kube), never its own.
    files: ['csi/src/**/*.ts'],
    ignores: ['csi/src/node/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['@kubernetes/client-node'], message: 'import it through @shadowset/operator/kube' }] }],
    },
  },
  {
    // The node side talks to no API server and imports no operator internals (only schemas would do).
    files: ['csi/src/node/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [
        { group: ['@kubernetes/client-node', '@shadowset/operator/kube', '@shadowset/operator'], message: 'the node plugin has no API server access' },
        { group: ['**/controller/**'], message: 'the node side does not import the controller' },
      ] }],
    },
  },
  {
    // The core is pure and deterministic: no node:* imports, no timers, no wall clock.
    files: ['engine/src/core/**/*.ts'],
    ignores: ['engine/src/core/**/*.test.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: ['node:*', 'fs', 'net', 'os', 'path'] }],
      'no-restricted-globals': ['error', 'setTimeout', 'setInterval', 'setImmediate', 'process'],
      'no-restricted-properties': ['error', { object: 'Date', property: 'now' }],
    },
  },
);
