// The page's service worker: keeps the page, the engine (the npm package in webtune/, with its
// wasm) and the demo in a cache of this build, so that the page works offline after the first
// visit. (Models from the hub have their own cache, kept by the package.)
//
// offline-manifest.js, written by scripts/build-npm.sh, names the files and the build's version (a
// hash of their contents). A new build changes it, so the browser installs this worker again: it
// fills a cache of the new version and deletes the caches of older ones.
//   webtune/**   build outputs: from the cache (they change only with a build, i.e. a new cache)
//   the rest     the page's own files: from the network when it answers (so that an edit shows on
//                the next reload without a build), else from the cache
// Requests for other files (models, the hub) pass through untouched.

importScripts('offline-manifest.js'); // sets self.OFFLINE_MANIFEST = { version, files }

const manifest = self.OFFLINE_MANIFEST;
const PREFIX = 'webtune-app-';
const CACHE = `${PREFIX}${manifest.version}`;
const scope = new URL(self.registration.scope);
const FILES = new Set(manifest.files.map((f) => new URL(f, scope).href));
const INDEX = new URL('index.html', scope).href;

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    await cache.addAll([...FILES].map((url) => new Request(url, { cache: 'reload' })));
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) if (name.startsWith(PREFIX) && name !== CACHE) await caches.delete(name);
    await self.clients.claim();
  })());
});

/** The cache key of a request, or undefined when the worker leaves it alone. */
function cacheKey(request) {
  if (request.method !== 'GET') return undefined;
  const url = new URL(request.url);
  url.search = '';
  url.hash = '';
  if (request.mode === 'navigate' && url.href === scope.href) return INDEX;
  return FILES.has(url.href) ? url.href : undefined;
}

async function networkFirst(request, key) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request);
    if (response.ok) await cache.put(key, response.clone());
    return response;
  } catch (error) {
    const cached = await cache.match(key);
    if (cached) return cached;
    throw error;
  }
}

async function cacheFirst(request, key) {
  const cached = await (await caches.open(CACHE)).match(key);
  return cached ?? fetch(request);
}

self.addEventListener('fetch', (event) => {
  const key = cacheKey(event.request);
  if (!key) return;
  const build = key.startsWith(new URL('webtune/', scope).href);
  event.respondWith(build ? cacheFirst(event.request, key) : networkFirst(event.request, key));
});
