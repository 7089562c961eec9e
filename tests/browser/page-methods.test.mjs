// The methods of issue 10 on the page, through roles and labels: each method card says what it
// trains (the core's trainable-parameter count and memory for the demo model); DoRA, IA3 and the
// two bottleneck layouts train 2 steps on the demo model; the export buttons offer the formats of
// the trained method only (PEFT for LoRA/DoRA/IA3/prompt tuning, AdapterHub for bottleneck
// adapters, GGUF for plain LoRA, a merged model for LoRA/DoRA/IA3); and the merged download is a
// Hugging Face model folder: config.json, model.safetensors with the base's tensors and dtypes,
// the tokenizer files.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startServer, launchBrowser } from './harness.mjs';
import {
  PAGE_ROOT, WWW, EXPORT_BUTTONS, checkBuilt, openApp, waitData, section, setOption, trainButton, alertsText, exportFile, readZip, readSafetensors,
} from './page-fixtures/lib.mjs';

let server;
let browser;
let page;

before(async () => {
  checkBuilt();
  server = await startServer(PAGE_ROOT);
  browser = await launchBrowser();
  page = await openApp(browser, server.url);
  await page.evaluate(() => { document.body.dataset.preview = 'waiting'; });
  await section(page, 'Data').getByRole('button', { name: 'Use the demo data' }).click();
  await waitData(page, 'preview', ['ready'], 60_000);
  await section(page, 'Data').getByLabel('No evaluation').check();
  await setOption(page, 'Steps', 2);
  await setOption(page, 'Evaluate every (steps)', '');
});

after(async () => {
  await page?.close().catch(() => {});
  await browser?.close();
  await server?.close();
});

/** Which export buttons are enabled after training. */
async function enabledExports() {
  const out = [];
  for (const [format, name] of Object.entries(EXPORT_BUTTONS)) {
    const button = section(page, 'Export').getByRole('button', { name });
    if ((await button.count()) && (await button.isVisible()) && (await button.isEnabled())) out.push(format);
  }
  return out;
}

/** Trains the checked method for 2 steps on the demo data. */
async function train() {
  await trainButton(page, 'Start training');
  assert.equal(await waitData(page, 'trainState', ['done', 'failed'], 300_000), 'done', await alertsText(page));
}

const CASES = [
  // radio name, the export formats it has, the adapter's files in its own format
  ['DoRA', ['peft', 'merged'], 'peft'],
  ['IA3', ['peft', 'merged'], 'peft'],
  ['Bottleneck adapter', ['adapterhub'], 'adapterhub'],
  ['Houlsby adapters', ['adapterhub'], 'adapterhub'],
  ['LoRA', ['peft', 'gguf', 'merged'], 'peft'],
];

test('each method card shows its trainable parameters and memory; each method trains and offers its exports', { timeout: 900_000 }, async () => {
  const settings = section(page, 'Settings');
  const counts = {};
  for (const [name, formats, own] of CASES) {
    const radio = settings.getByRole('radio', { name, exact: true });
    await radio.check();
    // The card's one-line facts (described-by the radio): from the core's run facts.
    const described = await radio.getAttribute('aria-describedby');
    const factsId = described.split(' ').find((id) => id.endsWith('-facts'));
    await page.waitForFunction((id) => /trainable parameters/.test(document.getElementById(id)?.textContent ?? ''), factsId, { timeout: 60_000 });
    const facts = await page.locator(`#${factsId}`).innerText();
    assert.match(facts, /^[\d,.]+\s*[KM]?\s*trainable parameters · ≈ .+ to train$/, `${name}: ${facts}`);
    counts[name] = facts;
    if (name === 'Bottleneck adapter') {
      assert.equal(await settings.getByLabel('Reduction factor').isVisible(), true);
      assert.equal(await settings.getByLabel('Rank r').isVisible(), false);
      await settings.getByLabel('Initialisation').selectOption('mam_adapter');
    }
    await train();
    assert.deepEqual(await enabledExports(), formats, `${name}: export buttons`);
    const zip = readZip((await exportFile(page, own)).bytes);
    const config = JSON.parse(zip['adapter_config.json']);
    if (own === 'adapterhub') {
      assert.deepEqual(Object.keys(zip).sort(), ['adapter.safetensors', 'adapter_config.json'], name);
      assert.equal(config.config.mh_adapter, name === 'Houlsby adapters', name);
      if (name === 'Bottleneck adapter') assert.equal(config.config.init_weights, 'mam_adapter');
    } else {
      assert.equal(config.peft_type, name === 'IA3' ? 'IA3' : 'LORA', name);
      assert.equal(config.use_dora ?? false, name === 'DoRA', name);
    }
  }
  console.log(`method cards on the demo model: ${JSON.stringify(counts)}`);
  page.assertClean();
});

test('the merged model download is a Hugging Face folder with the base tensors and dtypes', { timeout: 600_000 }, async () => {
  // The LoRA adapter trained last.
  const merged = await exportFile(page, 'merged');
  assert.match(merged.name, /-merged\.zip$/);
  const zip = readZip(merged.bytes);
  assert.deepEqual(Object.keys(zip).sort(), ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
  const demo = path.join(WWW, 'demo');
  const tensors = (bytes) =>
    Object.entries(readSafetensors(bytes)).filter(([n]) => n !== '__metadata__').map(([n, t]) => [n, t.dtype, t.shape]).sort();
  const base = fs.readFileSync(path.join(demo, 'model.safetensors'));
  assert.deepEqual(tensors(zip['model.safetensors']), tensors(base));
  for (const file of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) {
    assert.deepEqual(Buffer.from(zip[file]), fs.readFileSync(path.join(demo, file)), file);
  }
  // The trained LoRA adapts the attention projections (the page's default targets): those weights
  // changed, every other tensor is the base's, byte for byte.
  const got = readSafetensors(zip['model.safetensors']);
  const want = readSafetensors(base);
  const raw = (t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  const names = Object.keys(want).filter((n) => n !== '__metadata__');
  const changed = names.filter((n) => Buffer.compare(raw(got[n]), raw(want[n])) !== 0).sort();
  assert.deepEqual(changed, names.filter((n) => /self_attn\.[qkvo]_proj\.weight$/.test(n)).sort());
  console.log(`merged download: ${merged.name}, ${merged.bytes.length} bytes`);
  page.assertClean();
});
