// The webtune page: load a model and a dataset, train an adapter in a Web Worker, watch the loss,
// try the result, export it, and resume after a reload. One module per step (model, data,
// settings, train, try, export); they share the small `session` (session.js). Everything the
// engine does goes through the npm package's public API (www/webtune/, npm/src/index.d.ts).

import { mark } from './format.js';
import { startEngine } from './engine.js';
import { initModelStep, loadDemoModel } from './model.js';
import { initDataStep, useDemoData } from './data.js';
import { initSettingsStep } from './settings.js';
import { initTrainStep } from './train.js';
import { initTryStep } from './try.js';
import { initExportStep } from './export.js';
import { initGpuStep } from './gpu-bench.js';
import { initResume, offerSavedRun } from './resume.js';
import { registerOffline } from './offline.js';
import * as store from './store.js';
import { session } from './session.js';

async function main() {
  initSettingsStep();
  initModelStep();
  initDataStep();
  initTrainStep();
  initTryStep();
  initExportStep();
  initGpuStep();
  initResume();
  session.changed();
  try {
    if (!(await startEngine())) return;
    /** @type {import('./store.js').RunRecord | undefined} */
    let saved;
    try {
      saved = await store.loadRun();
    } catch (error) {
      console.warn('[webtune page] cannot read saved runs:', error);
    }
    // The demo loads at once (it is small and bundled), so the page works offline right away; a
    // saved run is offered on top of it.
    if (await loadDemoModel()) await useDemoData();
    if (saved) offerSavedRun(saved);
    else mark('savedRun', 'none');
    registerOffline();
  } finally {
    mark('ready', 'true');
    session.changed();
  }
}

main();
