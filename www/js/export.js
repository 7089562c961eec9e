// Step 6, Export: the tuned adapter in the formats its method has (the core's
// `AdapterInfo.exportFormats`): PEFT files or AdapterHub files (a zip), a llama.cpp GGUF LoRA, or
// the base model with the adapter merged in (a zip, or written into a picked folder); and importing
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

/** @typedef {import('../webtune/index.js').ExportFormat} ExportFormat */

/** What each export button writes. @type {Record<ExportFormat, string>} */
const WRITING = {
  peft: 'Writing the PEFT files…',
  adapterhub: 'Writing the AdapterHub files…',
  gguf: 'Writing the GGUF file…',
  merged: 'Merging the adapter into the model’s weights, one tensor at a time…',
};

/** @param {ExportFormat} format @param {FileSystemDirectoryHandle} [directory] */
async function exportAdapter(format, directory) {
  const engine = session.requireEngine();
  session.update({ busy: 'export' });
  setNote('export-status', WRITING[format]);
  try {
    const x = await engine.exportAdapter({ format, directory, pissaAsLora: input('export-pissa-as-lora').checked });
    if (x.written) {
      setNote('export-status', `Wrote ${x.written.join(', ')} into the folder ${directory?.name ?? ''}.`, 'ok');
      mark('exported', format);
      return;
    }
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
    const { config, weights, weightsFile } = await pkg().readAdapterFiles(picked);
    const files = { 'adapter_config.json': new TextEncoder().encode(config), [weightsFile]: weights };
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
      tuned: {
        method: info.peftType === 'PROMPT_TUNING' ? 'prompt-tuning' : 'lora',
        init: typeof cfg.init_lora_weights === 'string' ? cfg.init_lora_weights : 'default',
        source: 'import',
        formats: info.exportFormats,
      },
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
  button('export-adapterhub').addEventListener('click', () => exportAdapter('adapterhub'));
  button('export-gguf').addEventListener('click', () => exportAdapter('gguf'));
  button('export-merged').addEventListener('click', () => exportAdapter('merged'));
  const picker = /** @type {{ showDirectoryPicker?: (o: object) => Promise<FileSystemDirectoryHandle> }} */ (/** @type {unknown} */ (window)).showDirectoryPicker;
  button('export-merged-folder').addEventListener('click', async () => {
    let directory;
    try {
      directory = await picker?.call(window, { mode: 'readwrite', id: 'webtune-merged' });
    } catch {
      return; // the user closed the picker
    }
    if (directory) await exportAdapter('merged', directory);
  });
  onPick(input('adapter-files'), importAdapter);
  dropZone($('adapter-drop'), input('adapter-files'), importAdapter);
  session.onChange(() => {
    const canExport = session.canUseAdapter && !!session.tuned;
    // Before the core said (an older checkpoint's run): PEFT, and GGUF for LoRA.
    const formats = session.tuned?.formats ?? (session.tuned?.method === 'lora' ? ['peft', 'gguf'] : ['peft']);
    /** @type {Array<[string, ExportFormat]>} */
    const buttons = [['export-peft', 'peft'], ['export-adapterhub', 'adapterhub'], ['export-gguf', 'gguf'], ['export-merged', 'merged'], ['export-merged-folder', 'merged']];
    for (const [id, format] of buttons) {
      const offered = !session.tuned || formats.includes(format);
      // Formats the method lacks stay visible but disabled, saying why; AdapterHub's button shows
      // only for bottleneck adapters, the folder one only where the browser can write folders.
      button(id).hidden = (format === 'adapterhub' && !(session.tuned && offered)) || (id === 'export-merged-folder' && !picker);
      button(id).disabled = !(canExport && offered);
      button(id).title = offered ? '' : `A ${session.tuned?.method ?? ''} adapter cannot be exported this way`;
    }
    $('pissa-row').hidden = !String(session.tuned?.init ?? '').startsWith('pissa');
    input('adapter-files').disabled = !session.idle;
  });
}
