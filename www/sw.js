// The page's service worker: keeps the page, the engine (the npm package in webtune/, with its
// wasm) and the demo in a cache of this build, so that the page works offline after the first
// visit. (Models from the hub have their own cache, kept by the package.)
//
// offline-manifest.js, written by scripts/build-npm.sh, names the files and the build's version (a
// hash of their contents). A new build changes it, so the browser installs this worker again: it
// fills a cache of the new version and deletes the caches of older ones.
//
// Every file comes from the network while the server answers, so that a page never mixes two builds
// (the package's JavaScript and its wasm must match), and from the cache when it does not. The
// page's own files are cached again as they arrive (they change without a build); the build's files
// (webtune/) are in this version's cache from the install on.
// Requests for other files (models, the hub) pass through untouched.

importScripts('offline-manifest.js'); // sets self.OFFLINE_MANIFEST = { version, files }

const manifest = self.OFFLINE_MANIFEST;
const PREFIX = 'webtune-app-';
const CACHE = `${PREFIX}${manifest.version}`;
const scope = new URL(self.registration.scope);
const FILES = new Set(manifest.files.map((f) => new URL(f, scope).href));
const INDEX = new URL('index.html', scope).href;
const BUILD = new URL('webtune/', scope).href;

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

/** From the network (into the cache as well when `recache`), else from the cache. */
async function fromNetworkOrCache(request, key, recache) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request);
    if (recache && response.ok) await cache.put(key, response.clone());
    return response;
  } catch (error) {
    const cached = await cache.match(key);
    if (cached) return cached;
    throw error;
  }
}

self.addEventListener('fetch', (event) => {
  const key = cacheKey(event.request);
  if (!key) return;
  const build = key.startsWith(BUILD);
  event.respondWith(fromNetworkOrCache(event.request, key, !build));
});
