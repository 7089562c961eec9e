// Working offline: registers the service worker (www/sw.js), which keeps the page, the engine and
// the demo in the browser's cache, and says in the header once the page works offline.

import { $ } from './format.js';

export async function registerOffline() {
  if (!('serviceWorker' in navigator)) return;
  // Offline, the update check of a registered worker fails: the registered one still serves.
  navigator.serviceWorker.register(new URL('../sw.js', import.meta.url)).catch((error) => {
    console.warn('[webtune page] the offline copy was not updated (service worker):', error);
  });
  await navigator.serviceWorker.ready;
  const chip = $('offline-chip');
  chip.title = 'The page, the engine and the demo are kept in this browser: it works without a network after this visit.';
  chip.hidden = false;
}
