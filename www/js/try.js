// Step 5, Try it: the base model and the tuned one answer the same prompt side by side, streamed
// token by token.

import { $, h, mark, plural, button, input } from './format.js';
import { showError } from './alerts.js';
import { errorCode } from './errors.js';
import { recoverEngine } from './resume.js';
import { sizeClass } from './settings-fields.js';
import { session } from './session.js';

/** @typedef {import('../webtune/index.js').GenerateOptions} GenerateOptions */

const REASONS = { eos: 'end of text', length: 'max tokens reached', context: 'context full', aborted: 'stopped' };

const prompt = () => $('try-prompt', HTMLTextAreaElement);

/** @type {AbortController | null} */
let generating = null;
let promptEdited = false;

/** @param {SubmitEvent} event */
async function generate(event) {
  event.preventDefault();
  const engine = session.engine;
  if (button('try-go').disabled || !engine) return;
  const text = prompt().value;
  if (!text.trim()) {
    prompt().focus();
    return;
  }
  /** @type {GenerateOptions} */
  const options = {
    temperature: Number(input('try-temperature').value),
    topP: Number(input('try-topp').value),
    maxTokens: Math.max(1, Math.round(Number(input('try-max').value))),
    chat: !$('try-chat-row').hidden && input('try-chat').checked,
    seed: Math.floor(Math.random() * 2 ** 31),
  };
  const controller = new AbortController();
  generating = controller;
  session.update({ busy: 'generate' });
  mark('generate', 'running');
  const columns = /** @type {const} */ ([['base', 'out-base', 'out-base-info'], ['tuned', 'out-tuned', 'out-tuned-info']]);
  for (const [, out, info] of columns) {
    $(out).textContent = '';
    $(info).textContent = '';
  }
  try {
    for (const [which, outId, infoId] of columns) {
      const out = $(outId);
      const info = $(infoId);
      if (which === 'tuned' && !session.tuned) {
        info.textContent = 'No adapter yet: train one (step 4) or import one (step 6).';
        continue;
      }
      if (controller.signal.aborted) break;
      info.textContent = 'generating…';
      const started = performance.now();
      let tokens = 0;
      const gen = engine.generate(text, { ...options, adapter: which, signal: controller.signal });
      for await (const chunk of gen) {
        out.append(chunk);
        tokens++;
      }
      const result = await gen.result;
      // The whole text decodes multi-byte characters that single tokens split.
      if (result.text) out.textContent = result.text;
      const secs = (performance.now() - started) / 1000;
      info.textContent = `${plural(tokens, 'token')} in ${secs.toFixed(1)} s · ${REASONS[result.finishReason] ?? result.finishReason}`;
      if (!result.text && !out.textContent) out.replaceChildren(h('span', { class: 'muted', text: '(no text: the model ended its answer at once)' }));
    }
    mark('generate', 'done');
  } catch (error) {
    mark('generate', 'failed');
    const lost = errorCode(error) === 'DEVICE_LOST';
    showError(error, 'generate', { actions: lost ? [{ label: 'Restart on a new GPU device', primary: true, onClick: () => recoverEngine({ train: false }) }] : [] });
  } finally {
    generating = null;
    session.update({ busy: '' });
  }
}

/** A prompt of the demo's task (a word it was not trained on): the base model gets it wrong. */
const DEMO_PROMPT = 'Backwards: garden ->';

/** Generation defaults for the model: the toy demo answers in a few tokens; real models get room. */
function setDefaults() {
  const info = session.model?.info;
  if (!info) return;
  $('try-chat-row').hidden = !info.hasChatTemplate;
  input('try-chat').checked = info.hasChatTemplate;
  const toy = sizeClass(info.parameters) === 'toy';
  input('try-temperature').value = toy ? '0' : '0.7';
  input('try-max').value = toy ? '12' : '128';
  if (!promptEdited) prompt().value = toy ? DEMO_PROMPT : 'Explain in two sentences what a LoRA adapter is.';
}

export function initTryStep() {
  $('try-form', HTMLFormElement).addEventListener('submit', generate);
  button('try-stop').addEventListener('click', () => generating?.abort());
  prompt().value = DEMO_PROMPT;
  prompt().addEventListener('input', () => {
    promptEdited = true;
  });
  /** @type {unknown} */
  let modelShown = null;
  session.onChange(() => {
    if (session.model !== modelShown) {
      modelShown = session.model;
      setDefaults();
    }
    button('try-go').disabled = !session.canUseAdapter;
    button('try-stop').disabled = session.busy !== 'generate';
  });
}
