import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

// The web panel: built into dist/web, which the server serves at / (src/server/web.ts).
// `npm run dev:web` serves it with the API proxied to a running `stowage serve` on :8090.
const root = fileURLToPath(new URL('.', import.meta.url));

export default defineConfig({
  root,
  base: '/',
  publicDir: 'public',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: fileURLToPath(new URL('../dist/web', import.meta.url)),
    emptyOutDir: true,
    target: 'es2022',
    // No inline scripts or styles: the panel's Content-Security-Policy allows 'self' only.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
  },
  server: {
    proxy: { '/api': { target: process.env.STOWAGE_URL ?? 'http://127.0.0.1:8090', changeOrigin: false } },
  },
});
