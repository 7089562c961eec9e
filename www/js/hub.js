// Models from the Hugging Face hub tab: the form's id or URL as a model source (only from the
// hosts the page's Content-Security-Policy allows), and the suggested models with what training
// them needs.

import { $, h, bytes, count, input } from './format.js';
import { limitProblems } from './memory.js';
import { defaultConfig } from './settings-fields.js';

/** @typedef {import('../webtune/index.js').ModelSource} ModelSource */
/** @typedef {import('../webtune/index.js').Engine} Engine */
/** @typedef {import('./session.js').ModelIdentity} ModelIdentity */
/** @typedef {{ source: ModelSource, identity: ModelIdentity, label: string } | { error: string }} HubChoice */

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
 * Shows the suggested models: a row each with size, download, the storage width loading would
 * pick here, what training them with the page's defaults for their size needs, whether they fit
 * this GPU, and a button that puts the id into the form; and their ids for the id field's
 * autocompletion. Every figure is the core's (`engine.modelPresets`, `engine.presetFacts`, from
 * each model's config.json): nothing is downloaded.
 * @param {Engine} engine
 */
export async function renderSuggestions(engine) {
  const presets = await engine.modelPresets();
  const rows = await Promise.all(presets.map(async (p) => {
    const { weightsDtype, weightsReason, problem, facts } = await engine.presetFacts(p.name, defaultConfig(p));
    const problems = problem ? [problem] : limitProblems(facts.memory.largestBuffer, engine.gpu);
    const fits = problems.length === 0;
    return h('tr', {},
      h('td', {}, h('code', { text: p.hubId })),
      h('td', { text: count(p.parameters) }),
      h('td', { text: bytes(p.downloadBytes) }),
      h('td', { text: `${weightsDtype} weights`, title: `Stored as ${weightsDtype}: ${weightsReason}` }),
      h('td', {}, `≈ ${bytes(facts.memory.total)} `, h('span', {
        class: fits ? 'fits' : 'nofit',
        text: fits ? '✓ within this GPU’s limits' : '✗ over this GPU’s limits',
        title: fits ? '' : problems.join('; '),
      })),
      h('td', {}, h('button', {
        type: 'button', class: 'btn btn-ghost btn-small', text: 'Use', 'aria-label': `Use ${p.hubId}`,
        onclick: () => {
          input('hub-id').value = p.hubId;
          input('hub-id').focus();
        },
      })));
  }));
  $('hub-suggestion-rows').replaceChildren(...rows);
  $('hub-suggestions').replaceChildren(...presets.map((p) => h('option', { value: p.hubId })));
}
