// The page's service worker: after the first load the page works offline (issue 4).
// Follows the Service Workers specification (W3C, https://www.w3.org/TR/service-workers/):
// `install` precaches, `activate` drops the caches of older builds, `fetch` answers requests.
//
// What is kept, and where (Cache Storage):
//   quantlab-shell-BUILD   the app shell of one build: index.html, www/*.js and css, the wasm
//                          module, the vendored uPlot and hyparquet, the texts and explainers. The
//                          list and BUILD (a hash of those files' bytes) come from www/pkg/shell.js,
//                          which scripts/build-web.sh writes.
//   quantlab-models-v1     the models, written by www/download.js as they download; this worker
//                          never touches it, so the default model fetched once loads offline.
//
// Strategy: network first, the shell cache when the network fails. So a page that is online
// always runs the files the server has now (a new build is never hidden behind an old cache),
// and an offline one runs the last build it precached, whole. The browser re-checks this file and
// shell.js (imported) on every navigation: a new build changes shell.js, so a new worker
// installs, precaches the new shell, takes over once the page has loaded and deletes the old
// shell cache.
//
// The worker is served from www/ but controls the whole page (scope "/"): `quantlab serve` sends
// `Service-Worker-Allowed: /` with it. Requests it does not know (models, Range requests, the Hub)
// pass through untouched.

/* global importScripts */
importScripts('pkg/shell.js');

const BUILD = self.QUANTLAB_BUILD;
const SHELL_CACHE = `quantlab-shell-${BUILD}`;
const SHELL_PREFIX = 'quantlab-shell-';
// The page's directory: shell.js lists files relative to it.
const SCOPE = self.registration.scope;
const shellUrls = new Set(self.QUANTLAB_SHELL.map((f) => new URL(f, SCOPE).href));
const INDEX = new URL('./', SCOPE).href;

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(SHELL_CACHE);
    // `reload`: straight from the server, not from the HTTP cache of an older build. addAll
    // fails as a whole if any file is missing, so a cache is either complete or not installed.
    await cache.addAll([...shellUrls].map((u) => new Request(u, { cache: 'reload' })));
    // No skipWaiting() here: the page asks for it once it has loaded (see the message handler).
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith(SHELL_PREFIX) && name !== SHELL_CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

// The shell cache's key for a request, or null when the request is not for the shell.
function shellKey(request) {
  if (request.method !== 'GET') return null;
  const url = new URL(request.url);
  if (request.mode === 'navigate') {
    // The page itself, whatever its query (?backend=cpu, ?hub=…) and hash.
    const path = url.origin + url.pathname;
    return path === INDEX || path === `${INDEX}index.html` ? INDEX : null;
  }
  const plain = url.origin + url.pathname;
  return url.search === '' && shellUrls.has(plain) ? plain : null;
}

self.addEventListener('fetch', (event) => {
  const key = shellKey(event.request);
  if (key === null) return;
  event.respondWith((async () => {
    try {
      return await fetch(event.request);
    } catch (e) {
      // Offline (or the server is gone): the build this worker precached.
      const hit = await caches.match(key, { cacheName: SHELL_CACHE });
      if (hit) return hit;
      throw e;
    }
  })());
});

// The page asks which build is kept for offline use, or (a new build's worker, installed and
// waiting) to take over now. Why the page and not `install` calls skipWaiting(): Chromium takes
// over by stopping the old worker once it is idle; a page still loading restarts it with its
// requests, and then the new worker can stay "waiting" for minutes (measured: over 200 s, in 3
// of 5 runs of tests/browser/offline.test.mjs). A page that has loaded sends nothing to race it.
self.addEventListener('message', (event) => {
  if (event.data?.type === 'build') {
    event.source?.postMessage({ type: 'build', build: BUILD, files: shellUrls.size });
  } else if (event.data?.type === 'skip-waiting') {
    event.waitUntil(self.skipWaiting());
  }
});
