// Models from the Hugging Face hub tab: the form's id or URL as a model source (only from the
// hosts the page's Content-Security-Policy allows), and the suggested models with what training
// them needs.

import { h, bytes, count, input } from './format.js';
import { defaultConfig } from './settings-fields.js';
import { estimateMemory } from './memory.js';

/** @typedef {import('../webtune/index.js').ModelSource} ModelSource */
/** @typedef {import('../webtune/index.js').GpuInfo} GpuInfo */
/** @typedef {import('./session.js').ModelIdentity} ModelIdentity */
/** @typedef {{ source: ModelSource, identity: ModelIdentity, label: string } | { error: string }} HubChoice */

/** Hub models we suggest, with what their config.json says (for the memory estimate before download). */
const SUGGESTED = [
  { id: 'HuggingFaceTB/SmolLM2-135M-Instruct', parameters: 134.5e6, download: 269e6, vocabSize: 49152, hiddenSize: 576, numLayers: 30, numHeads: 9, numKvHeads: 3, intermediateSize: 1536, maxPositions: 8192, linearLayers: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] },
  { id: 'HuggingFaceTB/SmolLM2-360M-Instruct', parameters: 361.8e6, download: 724e6, vocabSize: 49152, hiddenSize: 960, numLayers: 32, numHeads: 15, numKvHeads: 5, intermediateSize: 2560, maxPositions: 8192, linearLayers: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] },
  { id: 'Qwen/Qwen2.5-0.5B-Instruct', parameters: 494e6, download: 988e6, vocabSize: 151936, hiddenSize: 896, numLayers: 24, numHeads: 14, numKvHeads: 2, intermediateSize: 4864, maxPositions: 32768, linearLayers: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] },
];

/**
 * The hosts a model may come from, as the page's Content-Security-Policy says: this page's own
 * origin and the Hugging Face hub (the engine's worker fetches; the page checks here so that the
 * user gets a reason instead of a blocked request).
 * @param {string} url
 */
function allowedModelHost(url) {
  try {
    const u = new URL(url, location.href);
    if (u.origin === location.origin) return true;
    return u.protocol === 'https:' && (u.hostname === 'huggingface.co' || /\.(huggingface\.co|hf\.co)$/.test(u.hostname));
  } catch {
    return false;
  }
}

const HOST_HELP = 'For your privacy this page only downloads from the Hugging Face hub (huggingface.co) and from its own server. ' +
  'For a model elsewhere, download its files and choose them under “Your files”.';

/**
 * The hub form as a model source: a Hugging Face id (`owner/name`), a hub page URL or a folder URL;
 * null when the id is empty.
 * @returns {HubChoice | null}
 */
export function hubChoice() {
  const raw = input('hub-id').value.trim();
  const revision = input('hub-revision').value.trim() || 'main';
  const cache = input('hub-cache').checked;
  let base = input('hub-base').value.trim().replace(/\/+$/, '') || 'https://huggingface.co';
  if (!raw) return null;
  if (!allowedModelHost(base)) return { error: `${base} is not the Hugging Face hub or this page’s server. ${HOST_HELP}` };
  /** @param {string} id @param {string} rev @returns {HubChoice} */
  const hub = (id, rev) => ({ source: { hub: id, revision: rev, baseUrl: base, cache }, identity: { kind: 'hub', id, revision: rev, baseUrl: base }, label: id });
  if (/^https?:\/\//i.test(raw)) {
    const url = new URL(raw);
    const m = url.pathname.match(/^\/([^/]+\/[^/]+)(?:\/(?:tree|resolve|blob)\/([^/]+))?\/?$/);
    if (url.hostname === 'huggingface.co' && m) {
      base = url.origin;
      return hub(m[1], m[2] ?? revision);
    }
    if (!allowedModelHost(url.href)) return { error: `${url.origin} is not the Hugging Face hub or this page’s server. ${HOST_HELP}` };
    const folder = url.href.endsWith('/') ? url.href : `${url.href}/`;
    return { source: { url: folder, cache }, identity: { kind: 'url', url: folder }, label: folder };
  }
  if (!/^[\w.-]+\/[\w.-]+$/.test(raw)) return { error: `“${raw}” is not a model id like HuggingFaceTB/SmolLM2-135M-Instruct` };
  return hub(raw, revision);
}

/**
 * The suggested models' rows: size, download, what training them needs on this GPU, and a button
 * that puts the id into the form.
 * @param {GpuInfo} gpu
 */
export function suggestionRows(gpu) {
  return SUGGESTED.map((s) => {
    const est = estimateMemory(s, defaultConfig(s), gpu);
    return h('tr', {},
      h('td', {}, h('code', { text: s.id })),
      h('td', { text: count(s.parameters) }),
      h('td', { text: bytes(s.download) }),
      h('td', {}, `≈ ${bytes(est.total)} `, h('span', { class: est.fits ? 'fits' : 'nofit', text: est.fits ? '✓ within this GPU’s limits' : '✗ over this GPU’s limits' })),
      h('td', {}, h('button', {
        type: 'button', class: 'btn btn-ghost btn-small', text: 'Use', 'aria-label': `Use ${s.id}`,
        onclick: () => {
          input('hub-id').value = s.id;
          input('hub-id').focus();
        },
      })));
  });
}
