// Models from the Hugging Face hub tab: the form's id or URL as a model source (only from the
// hosts the page's Content-Security-Policy allows), and the suggested models with what training
// them needs.

import { h, bytes, count, input } from './format.js';
import { limitProblems } from './memory.js';

/** @typedef {import('../webtune/index.js').ModelSource} ModelSource */
/** @typedef {import('../webtune/index.js').GpuInfo} GpuInfo */
/** @typedef {import('./session.js').ModelIdentity} ModelIdentity */
/** @typedef {{ source: ModelSource, identity: ModelIdentity, label: string } | { error: string }} HubChoice */

/**
 * Hub models we suggest. `train` and `largestBuffer` are the core's memory estimate
 * (src/session/memory.rs) of training each with the page's default settings for its size (LoRA
 * r 8 on q, k, v, o; batch 4 or 2 of 256 tokens; dropout), worked out from its config.json: the
 * page cannot ask the core before the model is downloaded. Once loaded, engine.runFacts gives it.
 */
const SUGGESTED = [
  { id: 'HuggingFaceTB/SmolLM2-135M-Instruct', parameters: 134.5e6, download: 269e6, train: 4_208_928_000, largestBuffer: 201_326_592 },
  { id: 'HuggingFaceTB/SmolLM2-360M-Instruct', parameters: 361.8e6, download: 724e6, train: 4_486_844_160, largestBuffer: 188_743_680 },
  { id: 'Qwen/Qwen2.5-0.5B-Instruct', parameters: 494e6, download: 988e6, train: 5_278_883_328, largestBuffer: 544_538_624 },
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
    const fits = limitProblems(s.largestBuffer, gpu).length === 0;
    return h('tr', {},
      h('td', {}, h('code', { text: s.id })),
      h('td', { text: count(s.parameters) }),
      h('td', { text: bytes(s.download) }),
      h('td', {}, `≈ ${bytes(s.train)} `, h('span', { class: fits ? 'fits' : 'nofit', text: fits ? '✓ within this GPU’s limits' : '✗ over this GPU’s limits' })),
      h('td', {}, h('button', {
        type: 'button', class: 'btn btn-ghost btn-small', text: 'Use', 'aria-label': `Use ${s.id}`,
        onclick: () => {
          input('hub-id').value = s.id;
          input('hub-id').focus();
        },
      })));
  });
}
