// Plain-words explanations of what went wrong and what to do, from the engine's WebtuneError codes
// (npm/src/index.d.ts) and the browser's own errors (storage quota, no WebGPU).

export const WEBGPU_HELP =
  'Use a browser with WebGPU: Chrome or Edge 113 or newer on Windows, macOS or ChromeOS (Chrome 121+ on Android), ' +
  'Safari 26 or newer, or Firefox 141+ on Windows. On Linux, Chrome needs chrome://flags/#enable-unsafe-webgpu ' +
  '(or the command-line switch --enable-unsafe-webgpu); in other Firefox versions set dom.webgpu.enabled in about:config.';

function isQuota(error) {
  return error?.name === 'QuotaExceededError' || /quota|disk (is )?full|no space/i.test(String(error?.message ?? ''));
}

/**
 * Returns {title, action, detail, code} for an error in `context`: 'engine' (starting),
 * 'model' (loading), 'data', 'train', 'generate', 'export', 'adapter', 'checkpoint'.
 */
export function explain(error, context = '') {
  // DOMExceptions have a numeric legacy `code` (22 for a full quota): only string codes are ours.
  const code = typeof error?.code === 'string' ? error.code : isQuota(error) ? 'QUOTA' : undefined;
  const message = String(error?.message ?? error ?? 'unknown error');
  const r = (title, action) => ({ title, action, detail: message, code });

  switch (code) {
    case 'NO_WEBGPU':
      if (/no usable GPU adapter|requestAdapter|blocklist/i.test(message)) {
        return r('The browser refused to give this page a GPU adapter.',
          'WebGPU is there, but the GPU is blocklisted or hardware acceleration is off. Turn on hardware acceleration in the browser settings and update the graphics driver; ' +
          'on Linux, start Chrome with --enable-unsafe-webgpu (or enable chrome://flags/#enable-unsafe-webgpu). ' + WEBGPU_HELP);
      }
      if (/secure context/i.test(message)) {
        return r('WebGPU needs a secure page.', 'Open the page over https://, or from http://localhost while developing.');
      }
      return r('This browser has no WebGPU, which webtune needs to train on your GPU.', WEBGPU_HELP);
    case 'GPU': {
      if (context === 'engine') {
        return r('The browser refused to give this page a GPU.',
          'WebGPU is present but the adapter request was refused (blocklisted or disabled GPU). ' +
          'Update the graphics driver, enable hardware acceleration in the browser settings, or on Linux start Chrome with --enable-unsafe-webgpu. ' +
          WEBGPU_HELP);
      }
      if (/limit|binding size|maxBuffer|max_buffer|maxStorage|too large|exceeds/i.test(message)) {
        return r('The GPU’s limits are too small for this model with these settings.',
          'Lower the batch size or the maximum length (the biggest buffer is batch × length × vocabulary), or choose a smaller model.');
      }
      if (/lost|destroy/i.test(message)) {
        return r('The GPU device was lost.',
          context === 'train'
            ? 'Training stopped, but the last checkpoint is safe in browser storage: reload the page and choose “Resume”. If it happens again, lower the batch size or maximum length.'
            : 'Reload the page. If it happens again, close other GPU-heavy tabs or lower the batch size.');
      }
      if (/memory|OOM|allocat/i.test(message)) {
        return r('The GPU ran out of memory.',
          context === 'train'
            ? 'The last checkpoint is safe in browser storage: reload the page, lower the batch size or maximum length (or raise gradient accumulation instead), then choose “Resume”.'
            : 'Lower the batch size or maximum length, close other GPU-heavy tabs, or choose a smaller model.');
      }
      return r('The GPU reported an error.', context === 'train'
        ? 'The last checkpoint is safe in browser storage: reload the page and choose “Resume”.'
        : 'Reload the page and try again.');
    }
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
    case 'INVALID_DATASET': {
      // The core names the place as `file:line: reason`.
      const at = message.match(/^(.+?):(\d+): ([\s\S]*)$/);
      return r(at ? `Line ${at[2]} of ${at[1]} cannot be used: ${at[3]}` : 'The dataset cannot be used as it is.',
        'Fix that row in the file, or tick “Skip these rows and train on the good ones” in step 2 to train on the rows that are fine.');
    }
    case 'INVALID_ADAPTER':
      return r('This adapter does not fit the loaded model.', 'Import an adapter trained for this base model (PEFT adapter_config.json + adapter_model.safetensors).');
    case 'INVALID_OPTIONS':
      return r('A setting is not valid.', 'Check the setting the message names in step 3.');
    case 'WORKER':
    case 'WASM':
      if (context !== 'engine') {
        return r('The training engine stopped unexpectedly.',
          'The browser may have run out of memory for this tab. Your last checkpoint is safe in browser storage: reload the page and choose “Resume” (with a smaller batch size or maximum length if it happens again).');
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
    default:
      if (context === 'engine') {
        return r('The training engine could not start.',
          'Build it first (bash scripts/build-npm.sh, or scripts/serve.sh which builds and serves), then reload.');
      }
      return r('Something went wrong.', 'Try again; if it keeps happening, reload the page (your last checkpoint is kept).');
  }
}
