// Errors with a stable `code` (see index.d.ts for the list and what each means).

/** An `Error` whose `code` says what went wrong; `message` says what to do about it. */
export class WebtuneError extends Error {
  /**
   * @param {import('./index.js').ErrorCode} code
   * @param {string} message
   * @param {{ cause?: unknown }} [options]
   */
  constructor(code, message, options) {
    super(message, options);
    this.name = 'WebtuneError';
    /** @type {import('./index.js').ErrorCode} */
    this.code = code;
  }
}

/**
 * Turns anything thrown (a wasm error with `code`, a DOM exception, a panic) into a WebtuneError.
 * @param {unknown} e
 * @param {import('./index.js').ErrorCode} [fallback]
 * @returns {WebtuneError}
 */
export function toWebtuneError(e, fallback = 'INTERNAL') {
  if (e instanceof WebtuneError) return e;
  const err = /** @type {any} */ (e);
  if (err && typeof err.code === 'string' && typeof err.message === 'string' && /^[A-Z_]+$/.test(err.code)) {
    return new WebtuneError(err.code, err.message, { cause: e });
  }
  if (err && err.name === 'AbortError') return new WebtuneError('ABORTED', 'the operation was aborted', { cause: e });
  const message = err && typeof err.message === 'string' ? err.message : String(e);
  if (fallback === 'INTERNAL') {
    return new WebtuneError(
      'INTERNAL',
      `${message} (an unexpected failure inside webtune; please report it with the browser console log, and reload the page: the engine may be unusable now)`,
      { cause: e },
    );
  }
  return new WebtuneError(fallback, message, { cause: e });
}

/**
 * Plain-object form of an error for postMessage (custom properties do not survive cloning).
 * @param {unknown} e
 */
export function serializeError(e) {
  const err = toWebtuneError(e);
  return { code: err.code, message: err.message };
}

/** @param {{ code: any, message: string }} data */
export function deserializeError(data) {
  return new WebtuneError(data.code, data.message);
}
