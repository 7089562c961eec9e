import { createEngine, demo, WebtuneError } from 'webtune';

const log = (line: string) => (document.querySelector('#log')!.textContent += line + '\n');

try {
  const engine = await createEngine(); // or createWorkerEngine(): same API, off the UI thread
  await engine.loadModel(demo.model); // or { hub: 'HuggingFaceTB/SmolLM2-135M' }, or picked files
  const trainer = await engine.createTrainer({ data: demo.train, config: { steps: 3, lr: 1e-2 } });
  await trainer.train({
    onProgress: (m) => log(`step ${m.step}/${m.totalSteps}: loss ${m.loss.toFixed(3)}, ${m.tokensPerSecond.toFixed(0)} tokens/s`),
  });
  const { blob, fileName } = await engine.exportAdapter({ format: 'peft' }); // or 'gguf'
  const link = Object.assign(document.createElement('a'), { href: URL.createObjectURL(blob), download: fileName });
  link.textContent = `Download ${fileName} (${blob.size} bytes)`;
  document.body.append(link);
} catch (e) {
  log(e instanceof WebtuneError ? `${e.code}: ${e.message}` : String(e));
}
