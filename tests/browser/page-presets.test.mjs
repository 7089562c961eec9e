// The suggested hub models on the page (the "Hugging Face hub" tab): SmolLM2-135M/360M, Gemma 3
// 270M, Qwen2.5-0.5B, Qwen3-0.6B and Llama 3.2 1B, each with its size, download, the storage width
// loading would pick on this GPU (SwiftShader has no shader-f16: f32), the GPU memory training it
// with the page's defaults needs and whether it fits this GPU's limits: all from the core, worked
// out from each model's config.json, with nothing downloaded.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openApp, pageSuite } from './page-fixtures/lib.mjs';

const EXPECTED = [
  ['HuggingFaceTB/SmolLM2-135M-Instruct', '135 M', 134_515_008],
  ['HuggingFaceTB/SmolLM2-360M-Instruct', '362 M', 361_821_120],
  ['google/gemma-3-270m-it', '268 M', 268_098_176],
  ['Qwen/Qwen2.5-0.5B-Instruct', '494 M', 494_032_768],
  ['Qwen/Qwen3-0.6B', '596 M', 596_049_920],
  ['meta-llama/Llama-3.2-1B-Instruct', '1.2 B', 1_235_814_400],
];

const suite = pageSuite();

test('the suggested models say their size, storage width, memory and fit before any download', { timeout: 240_000 }, async () => {
  const page = (suite.page = await openApp(suite.browser, suite.server.url));
  await page.getByRole('tab', { name: /Hugging Face hub/i }).click();
  const table = page.getByRole('table', { name: 'Suggested models' });
  const rows = table.locator('tbody tr');
  await page.waitForFunction(() => document.querySelectorAll('#hub-suggestion-rows tr').length === 6, null, { timeout: 60_000 });
  for (const [i, [id, parameters]] of EXPECTED.entries()) {
    const cells = await rows.nth(i).locator('td').allInnerTexts();
    console.log(cells.slice(0, 5).join(' | '));
    assert.equal(cells[0], id);
    assert.equal(cells[1], parameters, `${id}: parameters`);
    assert.match(cells[2], /^\d[\d.]* (MB|GB)$/, `${id}: download`);
    assert.equal(cells[3], 'f32 weights', `${id}: SwiftShader has no shader-f16, so BF16 checkpoints are stored in f32`);
    assert.match(cells[4], /^≈ \d[\d.]* (MB|GB) ✓ within this GPU’s limits$/, `${id}: memory and fit`);
  }
  const storage = await rows.nth(4).locator('td').nth(3).getAttribute('title');
  assert.match(storage, /Stored as f32: .*no shader-f16/, storage);

  // Stored as f32, the weights alone take 4 bytes a parameter: every estimate holds at least that.
  for (const [i, [id, , parameters]] of EXPECTED.entries()) {
    const [, value, unit] = (await rows.nth(i).locator('td').nth(4).innerText()).match(/≈ ([\d.]+) (MB|GB)/);
    const estimate = Number(value) * (unit === 'GB' ? 1e9 : 1e6);
    assert.ok(estimate >= 4 * parameters * 0.95, `${id}: ${estimate} bytes to train ${parameters} f32 weights`);
  }

  await rows.nth(4).getByRole('button', { name: 'Use Qwen/Qwen3-0.6B' }).click();
  assert.equal(await page.locator('#hub-id').inputValue(), 'Qwen/Qwen3-0.6B');
  const options = await page.locator('#hub-suggestions option').evaluateAll((os) => os.map((o) => o.value));
  assert.deepEqual(options, EXPECTED.map(([id]) => id));

  assert.deepEqual(page.requests.filter((u) => /huggingface|hf\.co/.test(u)), [], 'nothing was fetched from the hub');
  page.assertClean();
});
