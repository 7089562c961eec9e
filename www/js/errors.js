// Plain-words explanations of what went wrong and what to do. The kind of failure comes from the
// error's stable code only: the engine's WebtuneError codes (npm/src/index.d.ts), the page's
// storage codes (store.js) and the name of a browser DOMException. Messages are shown, never
// parsed.

/**
 * Where the error happened: starting the engine, loading a model, reading data, training,
 * generating, exporting, importing an adapter, or saving a checkpoint.
 * @typedef {'engine' | 'model' | 'data' | 'train' | 'generate' | 'export' | 'adapter' | 'checkpoint' | 'bench'} ErrorContext
 */
/**
 * What the page knows about the browser: whether it exposes WebGPU and is a secure context.
 * @typedef {{ webgpu?: boolean, secure?: boolean }} Browser
 */
/** @typedef {{ title: string, action: string, detail: string, code: string | undefined }} Explanation */

/**
 * The error's code: a string `code` (DOMExceptions have a numeric legacy one), or `QUOTA` for the
 * browser's QuotaExceededError.
 * @param {unknown} error
 */
export function errorCode(error) {
  const e = /** @type {{ code?: unknown, name?: unknown } | null | undefined} */ (error);
  if (typeof e?.code === 'string') return e.code;
  if (e?.name === 'QuotaExceededError') return 'QUOTA';
  return undefined;
}

const CHECKPOINT_SAFE = 'The last checkpoint is safe in browser storage';

/**
 * @param {unknown} error
 * @param {ErrorContext} context
 * @param {Browser} [browser]
 * @returns {Explanation}
 */
export function explain(error, context, browser = {}) {
  const code = errorCode(error);
  const message = String(/** @type {{ message?: unknown } | null} */ (error)?.message ?? error ?? 'unknown error');
  /** @param {string} title @param {string} action @param {string} [detail] */
  const r = (title, action, detail = message) => ({ title, action, detail, code });

  switch (code) {
    case 'NO_WEBGPU':
      // The engine's message names the browsers, flags and settings that work: it is the action.
      if (browser.secure === false) return r('WebGPU needs a secure page.', message, '');
      if (browser.webgpu) return r('The browser refused to give this page a GPU adapter.', message, '');
      return r('This browser has no WebGPU, which webtune needs to train on your GPU.', message, '');
    case 'GPU':
      switch (context) {
        case 'engine':
          return r('The browser refused to give this page a GPU.',
            'WebGPU is there, but no GPU device was granted (blocklisted or disabled GPU). Update the graphics driver, turn on hardware acceleration in the browser settings, or on Linux start Chrome with --enable-unsafe-webgpu.');
        case 'model':
          return r('This model is too large for this GPU.',
            'Choose a smaller model (the suggestions under “Hugging Face hub” say what fits), or use a browser and GPU with larger limits.');
        case 'train':
          return r('The GPU ran out of memory or hit one of its limits.',
            `${CHECKPOINT_SAFE}: lower the batch size or the maximum length (or raise gradient accumulation instead), then start again or resume.`);
        case 'bench':
          return r('The GPU ran out of memory or hit one of its limits while measuring.', 'Measure the loaded model, or a smaller one; nothing of yours was touched.');
        default:
          return r('The GPU reported an error.', 'Try again; if it keeps happening, reload the page (your last checkpoint is kept).');
      }
    case 'DEVICE_LOST':
      return r('The GPU device was lost.',
        context === 'train'
          ? `Training stopped; ${CHECKPOINT_SAFE.toLowerCase()}. “Resume on a new GPU device” starts the engine again and continues from it.`
          : 'The browser or the driver took the GPU away. “Restart on a new GPU device” starts the engine again; your last checkpoint is kept.');
    case 'FILE_MISSING':
      return r('A file the model needs is missing.',
        'A model folder needs config.json, model.safetensors (or model.safetensors.index.json and all its shards), tokenizer.json and tokenizer_config.json.');
    case 'IO':
      return r('A file could not be read.', 'Check that the file is still there and readable, then try again.');
    case 'DOWNLOAD':
      return r('The download failed.',
        'Check the model id, the revision and your connection, then try again; files that already arrived are kept. ' +
        'Gated models (that need a login on huggingface.co) cannot be downloaded here: download them yourself and choose the folder under “Your files”.');
    case 'INVALID_CONFIG':
      return r('The model’s config.json cannot be used.', 'Check that it is a Hugging Face transformers config of a causal language model.');
    case 'UNSUPPORTED_ARCHITECTURE':
      return r('This kind of model is not supported.', 'webtune trains Llama-style models (Llama, SmolLM, TinyLlama…), Qwen2 / Qwen2.5 and GPT-2.');
    case 'CORRUPT_WEIGHTS':
      return r('The weights file is damaged or not a safetensors file.', 'Download it again; only .safetensors weights are read (not PyTorch .bin).');
    case 'MISSING_TENSOR':
      return r('The weights do not contain every tensor the config describes.', 'Check that all shards are there and that config.json belongs to these weights.');
    case 'SHAPE_MISMATCH':
      return r('A weight has a different shape than config.json says.', 'Check that config.json belongs to these weights.');
    case 'INVALID_TOKENIZER':
      return r('The tokenizer cannot be read.', 'A model needs the tokenizer.json and tokenizer_config.json of the Hugging Face tokenizers library.');
    case 'INVALID_DATASET':
      return r('A row of the dataset cannot be used.',
        'Fix that row in the file, or tick “Skip these rows and train on the good ones” in step 2 to train on the rows that are fine.');
    case 'INVALID_ADAPTER':
      return r('This adapter does not fit the loaded model.', 'Import an adapter trained for this base model (PEFT adapter_config.json + adapter_model.safetensors).');
    case 'INVALID_OPTIONS':
      return r('A setting is not valid.', 'Check the setting the message names in step 3.');
    case 'WORKER':
    case 'WASM':
      if (context !== 'engine') {
        return r('The training engine stopped unexpectedly.',
          `The browser may have run out of memory for this tab. ${CHECKPOINT_SAFE}: start the engine again and resume (with a smaller batch size or maximum length if it happens again).`);
      }
      return r('The training engine could not start.',
        'Its files (www/webtune/: worker.js and wasm/webtune_bg.wasm) could not be loaded. Rebuild them with bash scripts/build-npm.sh, check that the server serves .wasm files, then reload.');
    case 'NO_MODEL':
      return r('No model is loaded.', 'Load a model in step 1 first (the demo is one click).');
    case 'NO_ADAPTER':
      return r('There is no tuned adapter yet.', 'Train one in step 4 or import one in step 6.');
    case 'INVALID_STATE':
      return r('The engine is busy with a training run.', 'Stop the run (or wait for it to end), then try again.');
    case 'ABORTED':
      return r('Cancelled.', '');
    case 'ENGINE_DISPOSED':
      return r('The engine was shut down.', 'Reload the page to start it again; your last checkpoint is kept in browser storage.');
    case 'QUOTA':
      return r('Browser storage is full.',
        context === 'checkpoint'
          ? 'This checkpoint was not saved; training continues and the previous checkpoint is kept. Free space (delete site data of other sites, or cached models here) or export the adapter now.'
          : 'Free some space (site data of other sites, or cached models), then try again.');
    case 'STORAGE':
      return r('Browser storage did not save this.',
        context === 'checkpoint'
          ? 'The write was interrupted, so this checkpoint was not saved; training continues and the previous checkpoint is kept.'
          : 'Browser storage refused the write (private browsing, or site data turned off): try again, or export the adapter now.');
    default:
      if (context === 'engine') {
        return r('The training engine could not start.',
          'Build it first (bash scripts/build-npm.sh, or scripts/serve.sh which builds and serves), then reload.');
      }
      return r('Something went wrong.', 'Try again; if it keeps happening, reload the page (your last checkpoint is kept).');
  }
}
