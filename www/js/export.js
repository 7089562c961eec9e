// Step 6, Export: the tuned adapter as PEFT files (a zip) or a llama.cpp GGUF LoRA, and importing
// an adapter to try it, export it again or continue training it.

import { $, bytes, count, download, fingerprint, mark, setNote, button, input } from './format.js';
import { showError } from './alerts.js';
import { errorCode } from './errors.js';
import { dropZone, onPick } from './files.js';
import { pkg } from './engine.js';
import { recoverEngine } from './resume.js';
import { session } from './session.js';

/** @param {unknown} error @param {'export' | 'adapter'} context */
function explainFailure(error, context) {
  const lost = errorCode(error) === 'DEVICE_LOST';
  showError(error, context, { actions: lost ? [{ label: 'Restart on a new GPU device', primary: true, onClick: () => recoverEngine({ train: false }) }] : [] });
}

/** @param {'peft' | 'gguf'} format */
async function exportAdapter(format) {
  const engine = session.requireEngine();
  session.update({ busy: 'export' });
  setNote('export-status', format === 'gguf' ? 'Writing the GGUF file…' : 'Writing the PEFT files…');
  try {
    const x = await engine.exportAdapter({ format, pissaAsLora: input('export-pissa-as-lora').checked });
    download(x.blob, x.fileName);
    setNote('export-status', `Saved ${x.fileName} (${bytes(x.blob.size)}) to your downloads.`, 'ok');
    mark('exported', format);
  } catch (error) {
    setNote('export-status', '');
    explainFailure(error, 'export');
  } finally {
    session.update({ busy: '' });
  }
}

/** @param {File[]} picked */
async function importAdapter(picked) {
  const engine = session.requireEngine();
  session.update({ busy: 'adapter' });
  try {
    const { config, weights } = await pkg().readAdapterFiles(picked);
    const files = { 'adapter_config.json': new TextEncoder().encode(config), 'adapter_model.safetensors': weights };
    const info = await engine.loadAdapter(files);
    /** @type {{ init_lora_weights?: unknown }} */
    let cfg = {};
    try {
      cfg = JSON.parse(config);
    } catch {
      /* the engine accepted it, so this does not matter */
    }
    session.update({
      imported: { files, key: `adapter-${fingerprint(weights)}`, ...info },
      tuned: { method: info.peftType === 'PROMPT_TUNING' ? 'prompt-tuning' : 'lora', init: typeof cfg.init_lora_weights === 'string' ? cfg.init_lora_weights : 'default', source: 'import' },
    });
    input('continue-adapter').checked = true;
    $('adapter-import-name').textContent = `Imported: ${info.peftType}, ${count(info.trainableParameters)} parameters.`;
    setNote('export-status', 'Adapter imported: try it in step 5, export it again, or continue training it (step 4, “Start from the imported adapter”).', 'ok');
    mark('adapter', 'imported');
  } catch (error) {
    explainFailure(error, 'adapter');
  } finally {
    session.update({ busy: '' });
  }
}

export function initExportStep() {
  button('export-peft').addEventListener('click', () => exportAdapter('peft'));
  button('export-gguf').addEventListener('click', () => exportAdapter('gguf'));
  onPick(input('adapter-files'), importAdapter);
  dropZone($('adapter-drop'), input('adapter-files'), importAdapter);
  session.onChange(() => {
    const canExport = session.canUseAdapter && !!session.tuned;
    button('export-peft').disabled = !canExport;
    button('export-gguf').disabled = !(canExport && session.tuned?.method !== 'prompt-tuning');
    $('pissa-row').hidden = !String(session.tuned?.init ?? '').startsWith('pissa');
    input('adapter-files').disabled = !session.idle;
  });
}
