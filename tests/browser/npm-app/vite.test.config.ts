// The example's config plus a second page (worker.html) that tests createWorkerEngine.
import { defineConfig, mergeConfig } from 'vite';
import base from './vite.config';

export default mergeConfig(
  base,
  defineConfig({ build: { rolldownOptions: { input: { main: 'index.html', worker: 'worker.html' } } } }),
);
