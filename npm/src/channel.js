// A buffered async sequence: producers push values and close it (optionally with an error);
// every iterator reads all values from the start, waiting for new ones until it is closed.

/** @template T */
export class Channel {
  /** @type {T[]} */
  #items = [];
  #closed = false;
  /** @type {unknown} */
  #error = undefined;
  /** @type {Set<() => void>} */
  #waiters = new Set();

  /** @param {() => void} [onReturn] called when a consumer stops early (`break`) */
  constructor(onReturn) {
    this.onReturn = onReturn;
  }

  /** @param {T} value */
  push(value) {
    if (this.#closed) return;
    this.#items.push(value);
    this.#wake();
  }

  /** @param {unknown} [error] rejects pending and later reads after the buffered values */
  close(error) {
    if (this.#closed) return;
    this.#closed = true;
    this.#error = error;
    this.#wake();
  }

  get closed() {
    return this.#closed;
  }

  #wake() {
    for (const wake of this.#waiters) wake();
    this.#waiters.clear();
  }

  /** @returns {AsyncIterableIterator<T>} */
  [Symbol.asyncIterator]() {
    let i = 0;
    let stopped = false;
    const iterator = {
      next: async () => {
        for (;;) {
          if (stopped) return { value: undefined, done: true };
          if (i < this.#items.length) return { value: this.#items[i++], done: false };
          if (this.#closed) {
            stopped = true;
            if (this.#error !== undefined) throw this.#error;
            return { value: undefined, done: true };
          }
          await new Promise((resolve) => this.#waiters.add(/** @type {() => void} */ (resolve)));
        }
      },
      return: async () => {
        stopped = true;
        this.onReturn?.();
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return iterator;
      },
    };
    return /** @type {any} */ (iterator);
  }
}

/**
 * The open `metrics()` iterators of one trainer (main-thread or worker): each step's metrics go to
 * all of them, and the end of a run closes them all.
 * @template T
 */
export class Broadcast {
  /** @type {Set<Channel<T>>} */
  #channels = new Set();

  /** @param {T} value */
  push(value) {
    for (const channel of this.#channels) channel.push(value);
  }

  /** Ends every open iterator; with `error`, their reads reject after the buffered values. @param {unknown} [error] */
  close(error) {
    for (const channel of this.#channels) channel.close(error);
    this.#channels.clear();
  }

  /**
   * A new iterator of the values pushed from now on, already ended when `ended`.
   * @param {boolean} ended
   * @returns {AsyncIterableIterator<T>}
   */
  iterator(ended) {
    /** @type {Channel<T>} */
    const channel = new Channel(() => this.#channels.delete(channel));
    if (ended) channel.close();
    else this.#channels.add(channel);
    return channel[Symbol.asyncIterator]();
  }
}

/**
 * A `Generation`: iterate for the text chunks, or await `result`.
 * @param {Channel<string>} chunks
 * @param {Promise<import('./index.js').GenerationResult>} result
 */
export function makeGeneration(chunks, result) {
  result.catch(() => {}); // rejections are reported to whoever awaits `result` or iterates
  return {
    result,
    [Symbol.asyncIterator]: () => chunks[Symbol.asyncIterator](),
  };
}
