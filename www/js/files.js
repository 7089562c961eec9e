// Files from the user's disk: drop zones (files and whole folders) and the model files a folder
// needs. (Adapter files and zips are read by the package: readAdapterFiles.)

const MODEL_FILE = /(^|\/)(config\.json|generation_config\.json|tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|model\.safetensors\.index\.json|[^/]*\.safetensors)$/;

/** A dropped file, with its path inside the dropped folder. @typedef {File & { relativePath?: string }} DroppedFile */

/** The path of a picked or dropped file inside its folder ('SmolLM2/config.json'). @param {DroppedFile} file */
function filePath(file) {
  return file.relativePath || file.webkitRelativePath || file.name;
}

/**
 * Keeps the files a model load reads (drops .bin, .onnx, .gguf, README…), keyed by path.
 * @param {Iterable<File>} files
 * @returns {Record<string, File>}
 */
export function modelFiles(files) {
  /** @type {Record<string, File>} */
  const out = {};
  for (const file of files) {
    const path = filePath(file);
    if (MODEL_FILE.test(path) && !/(^|\/)adapter_model\.safetensors$/.test(path)) out[path] = file;
  }
  return out;
}

/** The folder name shared by the paths, or undefined. @param {string[]} paths */
export function folderName(paths) {
  const tops = new Set(paths.map((p) => (p.includes('/') ? p.split('/')[0] : '')));
  return tops.size === 1 ? [...tops][0] || undefined : undefined;
}

/** @param {FileSystemDirectoryReader} reader @returns {Promise<FileSystemEntry[]>} */
function readEntries(reader) {
  return new Promise((resolve, reject) => reader.readEntries(resolve, reject));
}

/** @param {FileSystemEntry} entry @param {string} prefix @param {DroppedFile[]} out */
async function walk(entry, prefix, out) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => /** @type {FileSystemFileEntry} */ (entry).file(resolve, reject));
    Object.defineProperty(file, 'relativePath', { value: prefix + file.name });
    out.push(file);
  } else if (entry.isDirectory) {
    const reader = /** @type {FileSystemDirectoryEntry} */ (entry).createReader();
    for (;;) {
      const batch = await readEntries(reader); // returns at most 100 at a time
      if (batch.length === 0) break;
      for (const child of batch) await walk(child, `${prefix}${entry.name}/`, out);
    }
  }
}

/** Every file of a drop, descending into dropped folders. @param {DataTransfer} dataTransfer */
async function droppedFiles(dataTransfer) {
  const items = [...dataTransfer.items].filter((i) => i.kind === 'file');
  const entries = items.map((i) => i.webkitGetAsEntry?.()).filter((e) => e !== null && e !== undefined);
  if (entries.length === 0) return [...dataTransfer.files];
  /** @type {DroppedFile[]} */
  const out = [];
  for (const entry of entries) await walk(entry, '', out);
  return out;
}

/**
 * Wires a drop zone: highlights on drag-over, calls onFiles(files) on drop (unless `input` is
 * disabled then); Enter/Space opens `input`.
 * @param {HTMLElement} el
 * @param {HTMLInputElement} input
 * @param {(files: File[]) => void} onFiles
 */
export function dropZone(el, input, onFiles) {
  let depth = 0;
  el.addEventListener('dragenter', (e) => {
    e.preventDefault();
    depth++;
    el.classList.add('dragover');
  });
  el.addEventListener('dragover', (e) => {
    e.preventDefault();
    if (e.dataTransfer) e.dataTransfer.dropEffect = 'copy';
  });
  el.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) el.classList.remove('dragover');
  });
  el.addEventListener('drop', async (e) => {
    e.preventDefault();
    depth = 0;
    el.classList.remove('dragover');
    if (!e.dataTransfer || input.disabled) return;
    const files = await droppedFiles(e.dataTransfer);
    if (files.length) onFiles(files);
  });
  el.addEventListener('keydown', (e) => {
    if ((e.key === 'Enter' || e.key === ' ') && e.target === el) {
      e.preventDefault();
      input.click();
    }
  });
}

/**
 * Calls `onFiles(files)` when files are chosen in `input`, then clears it (so that choosing the
 * same file again is a change too).
 * @param {HTMLInputElement} input
 * @param {(files: File[]) => void} onFiles
 */
export function onPick(input, onFiles) {
  input.addEventListener('change', () => {
    const files = [...(input.files ?? [])];
    input.value = '';
    if (files.length) onFiles(files);
  });
}
