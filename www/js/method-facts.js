// The method cards of the settings step: what each method would train on the loaded model (the
// core's trainable-parameter count) and the GPU memory it needs, from `engine.runFacts` with the
// current settings (the chosen method) or the method's defaults (the others).

import { bytes, count } from './format.js';
import { LORA, METHODS, coreMethod } from './settings-fields.js';
import { runFacts } from './memory.js';

/** @typedef {import('../webtune/index.js').TrainingConfig} TrainingConfig */
/** @typedef {import('./settings-fields.js').Method} Method */

let latest = 0;

/**
 * `current` (the chosen method's config) for another method: the shared sizes and LoRA's rank,
 * alpha and layers where it has them, else the method's defaults.
 * @param {Method} m @param {TrainingConfig} current @param {Method} chosen
 * @returns {TrainingConfig}
 */
function configFor(m, current, chosen) {
  if (m === chosen) return current;
  const shared = { batchSize: current.batchSize, maxLen: current.maxLen };
  if (LORA.includes(m)) {
    const init = m === 'pissa' ? 'pissa_niter_4' : 'default';
    return { ...shared, ...coreMethod(m), init, r: current.r, alpha: current.alpha, targets: current.targets };
  }
  return { ...shared, ...coreMethod(m) };
}

/** Fills every card's `method-<m>-facts` line (the latest call wins). @param {TrainingConfig} current @param {Method} chosen */
export async function renderMethodFacts(current, chosen) {
  const call = ++latest;
  for (const m of METHODS) {
    const el = document.getElementById(`method-${m}-facts`);
    if (!el) continue;
    const facts = await runFacts(configFor(m, current, chosen));
    if (call !== latest) return;
    el.textContent = facts ? `${count(facts.trainableParameters)} trainable parameters · ≈ ${bytes(facts.memory.total)} to train` : '';
  }
}
