import { defineConfig } from 'vite';

export default defineConfig({
  // webtune finds its .wasm file and worker with `new URL(..., import.meta.url)`. Vite 7 and older
  // break that when pre-bundling dependencies for the dev server; Vite 8 does not need this line.
  optimizeDeps: { exclude: ['webtune'] },
});
