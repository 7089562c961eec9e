#!/usr/bin/env node
// Tiny dependency-free static file server for www/ (development and browser tests).
//
//   node scripts/serve.mjs [root]        # serves root (default: www) on 127.0.0.1:$PORT (default 8080)
//
// Imported by tests/browser/harness.mjs through `createServer(root)`; it only listens when run
// directly. Every response carries COOP/COEP (cross-origin isolation, so SharedArrayBuffer and
// precise timers are available, and so tests notice any resource that would be blocked by it)
// and `Cache-Control: no-cache` (a rebuilt www/pkg is always picked up).

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const MIME_TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.htm': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/plain; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.wasm': 'application/wasm',
  // Everything else (.safetensors, .bin, tokenizer blobs, ...) is application/octet-stream.
};

export function mimeType(filePath) {
  return MIME_TYPES[path.extname(filePath).toLowerCase()] ?? 'application/octet-stream';
}

const COMMON_HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'Cache-Control': 'no-cache',
  'X-Content-Type-Options': 'nosniff',
};

function sendError(res, status, message) {
  const body = `${status} ${message}\n`;
  res.writeHead(status, {
    ...COMMON_HEADERS,
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
}

/**
 * Creates (but does not start) an http.Server serving the files under `root`.
 * `options.onRequest(req)` is called for every request (used by the test harness to record URLs).
 * `options.log` (default false) logs one line per request to stdout.
 */
export function createServer(root = 'www', options = {}) {
  if (!fs.existsSync(root)) throw new Error(`serve: ${path.resolve(root)} does not exist`);
  const rootDir = fs.realpathSync(path.resolve(root));
  const { onRequest, log = false } = options;

  return http.createServer((req, res) => {
    onRequest?.(req);
    res.on('finish', () => {
      if (log) console.log(`${res.statusCode} ${req.method} ${req.url}`);
    });

    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return sendError(res, 405, 'Method Not Allowed');
    }

    let pathname;
    try {
      pathname = decodeURIComponent(new URL(req.url, 'http://localhost').pathname);
    } catch {
      return sendError(res, 400, 'Bad Request');
    }
    if (pathname.includes('\0')) return sendError(res, 400, 'Bad Request');

    let filePath = path.resolve(rootDir, '.' + pathname);
    // No path traversal outside the root (also through symlinks).
    const inside = (p) => p === rootDir || p.startsWith(rootDir + path.sep);
    if (!inside(filePath)) return sendError(res, 403, 'Forbidden');

    let stat;
    try {
      filePath = fs.realpathSync(filePath);
      if (!inside(filePath)) return sendError(res, 403, 'Forbidden');
      stat = fs.statSync(filePath);
      if (stat.isDirectory()) {
        if (!pathname.endsWith('/')) {
          // Relative URLs in the index page must resolve inside the directory.
          res.writeHead(301, { ...COMMON_HEADERS, Location: pathname + '/' });
          return res.end();
        }
        filePath = path.join(filePath, 'index.html');
        stat = fs.statSync(filePath);
      }
      if (!stat.isFile()) return sendError(res, 404, 'Not Found');
    } catch {
      return sendError(res, 404, 'Not Found');
    }

    res.writeHead(200, {
      ...COMMON_HEADERS,
      'Content-Type': mimeType(filePath),
      'Content-Length': stat.size,
    });
    if (req.method === 'HEAD') return res.end();
    const stream = fs.createReadStream(filePath);
    stream.on('error', () => res.destroy());
    stream.pipe(res);
  });
}

function isMain() {
  if (!process.argv[1]) return false;
  try {
    return fs.realpathSync(process.argv[1]) === fs.realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  const root = process.argv[2] ?? 'www';
  const port = Number(process.env.PORT ?? 8080);
  const host = process.env.HOST ?? '127.0.0.1';
  let server;
  try {
    server = createServer(root, { log: true });
  } catch (err) {
    console.error(err.message);
    process.exit(1);
  }
  server.on('error', (err) => {
    console.error(`serve: ${err.message}`);
    process.exit(1);
  });
  server.listen(port, host, () => {
    console.log(`serve: ${path.resolve(root)} on http://${host === '127.0.0.1' ? 'localhost' : host}:${server.address().port}/ (Ctrl-C to stop)`);
  });
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
}
