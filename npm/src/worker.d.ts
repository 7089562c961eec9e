/**
 * `import "webtune/worker"` inside a module Web Worker makes that worker host a webtune engine;
 * pass it to `createWorkerEngine({ worker })`. (createWorkerEngine starts this file itself when no
 * worker is given.)
 */
export {};
