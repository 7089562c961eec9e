// Files from the user's disk: drop zones (files and whole folders), the model files a folder
// needs, and reading a PEFT adapter zip.

const MODEL_FILE = /(^|\/)(config\.json|generation_config\.json|tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|model\.safetensors\.index\.json|[^/]*\.safetensors)$/;

/** The path of a picked or dropped file inside its folder ('SmolLM2/config.json'). */
export function filePath(file) {
  return file.relativePath || file.webkitRelativePath || file.name;
}

/** Keeps the files a model load reads (drops .bin, .onnx, .gguf, README…), keyed by path. */
export function modelFiles(files) {
  const out = {};
  for (const file of files) {
    const path = filePath(file);
    if (MODEL_FILE.test(path) && !/(^|\/)adapter_model\.safetensors$/.test(path)) out[path] = file;
  }
  return out;
}

/** The folder name shared by the paths, or undefined. */
export function folderName(paths) {
  const tops = new Set(paths.map((p) => (p.includes('/') ? p.split('/')[0] : '')));
  return tops.size === 1 ? [...tops][0] || undefined : undefined;
}

function readEntries(reader) {
  return new Promise((resolve, reject) => reader.readEntries(resolve, reject));
}

async function walk(entry, prefix, out) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    Object.defineProperty(file, 'relativePath', { value: prefix + file.name });
    out.push(file);
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await readEntries(reader); // returns at most 100 at a time
      if (batch.length === 0) break;
      for (const child of batch) await walk(child, `${prefix}${entry.name}/`, out);
    }
  }
}

/** Every file of a drop, descending into dropped folders. */
export async function droppedFiles(dataTransfer) {
  const items = [...(dataTransfer.items ?? [])].filter((i) => i.kind === 'file');
  const entries = items.map((i) => i.webkitGetAsEntry?.()).filter(Boolean);
  if (entries.length === 0) return [...(dataTransfer.files ?? [])];
  const out = [];
  for (const entry of entries) await walk(entry, '', out);
  return out;
}

/** Wires a drop zone: highlights on drag-over, calls onFiles(files) on drop; Enter/Space opens `input`. */
export function dropZone(el, input, onFiles) {
  let depth = 0;
  el.addEventListener('dragenter', (e) => {
    e.preventDefault();
    depth++;
    el.classList.add('dragover');
  });
  el.addEventListener('dragover', (e) => {
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
  });
  el.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) el.classList.remove('dragover');
  });
  el.addEventListener('drop', async (e) => {
    e.preventDefault();
    depth = 0;
    el.classList.remove('dragover');
    const files = await droppedFiles(e.dataTransfer);
    if (files.length) onFiles(files);
  });
  el.addEventListener('keydown', (e) => {
    if ((e.key === 'Enter' || e.key === ' ') && e.target === el) {
      e.preventDefault();
      input?.click();
    }
  });
}

// --- zip (reading a PEFT adapter zip) ----------------------------------------------------------------

async function inflateRaw(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate-raw'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** The files of a zip archive (stored or deflated entries), keyed by their base name. */
export async function unzip(buffer) {
  const u8 = new Uint8Array(buffer);
  const view = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
  // End of central directory: the last 0x06054b50 within the final 64 KiB + 22 bytes.
  let eocd = -1;
  for (let i = u8.length - 22; i >= Math.max(0, u8.length - 65557); i--) {
    if (view.getUint32(i, true) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw Object.assign(new Error('not a zip file'), { code: 'INVALID_ADAPTER' });
  const entries = view.getUint16(eocd + 10, true);
  let p = view.getUint32(eocd + 16, true);
  const out = {};
  const decoder = new TextDecoder();
  for (let n = 0; n < entries; n++) {
    if (view.getUint32(p, true) !== 0x02014b50) throw Object.assign(new Error('damaged zip directory'), { code: 'INVALID_ADAPTER' });
    const method = view.getUint16(p + 10, true);
    const compressed = view.getUint32(p + 20, true);
    const nameLen = view.getUint16(p + 28, true);
    const extraLen = view.getUint16(p + 30, true);
    const commentLen = view.getUint16(p + 32, true);
    const local = view.getUint32(p + 42, true);
    const name = decoder.decode(u8.subarray(p + 46, p + 46 + nameLen));
    p += 46 + nameLen + extraLen + commentLen;
    if (name.endsWith('/')) continue;
    const localNameLen = view.getUint16(local + 26, true);
    const localExtraLen = view.getUint16(local + 28, true);
    const start = local + 30 + localNameLen + localExtraLen;
    const data = u8.subarray(start, start + compressed);
    const base = name.split('/').pop();
    if (method === 0) out[base] = data.slice();
    else if (method === 8) out[base] = await inflateRaw(data);
    else throw Object.assign(new Error(`${name}: zip compression method ${method} is not supported`), { code: 'INVALID_ADAPTER' });
  }
  return out;
}

/** Adapter files from a pick or drop: a zip is opened; loose files are keyed by base name. */
export async function adapterFiles(files) {
  const out = {};
  for (const file of files) {
    const name = file.name;
    if (/\.zip$/i.test(name)) Object.assign(out, await unzip(await file.arrayBuffer()));
    else out[name] = new Uint8Array(await file.arrayBuffer());
  }
  if (!out['adapter_config.json'] || !out['adapter_model.safetensors']) {
    throw Object.assign(new Error('an adapter needs adapter_config.json and adapter_model.safetensors (or a zip with both)'), { code: 'INVALID_ADAPTER' });
  }
  return out;
}
