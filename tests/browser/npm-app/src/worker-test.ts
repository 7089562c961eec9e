// Drives the worker variant (createWorkerEngine) through the whole API and leaves what it saw in
// window.__result for tests/browser/npm.test.mjs. Type-checked with the example against the
// package's .d.ts.
import { createWorkerEngine, demo, WebtuneError, type Engine, type StepMetrics, type TrainingConfig } from 'webtune';

const out: Record<string, unknown> = {};
const log = (line: string) => (document.querySelector('#log')!.textContent += line + '\n');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const codeOf = (e: unknown) => (e instanceof WebtuneError ? { code: e.code, message: e.message } : { code: 'not a WebtuneError', message: String(e) });
const bytesOf = async (blob: Blob) => Array.from(new Uint8Array(await blob.arrayBuffer()));

async function run(engine: Engine) {
  out.gpu = engine.gpu;
  out.version = engine.version;
  const phases = new Set<string>();
  out.model = await engine.loadModel(demo.model, { onProgress: (p) => phases.add(p.phase) });
  out.phases = [...phases];

  const config = { steps: 3, lr: 1e-2, batchSize: 4 };
  out.facts = await engine.runFacts(config);
  const trainer = await engine.createTrainer({ data: demo.train, evalData: demo.eval, config });
  out.report = trainer.report;
  out.totalSteps = trainer.totalSteps;
  const iterated: number[] = [];
  const iterating = (async () => {
    for await (const m of trainer.metrics()) iterated.push(m.step);
  })();
  const progress: StepMetrics[] = [];
  const checkpoints: Array<{ step: number; bytes: Uint8Array }> = [];
  const training = trainer.train({
    onProgress: (m) => {
      progress.push(m);
      log(`step ${m.step}/${m.totalSteps}: loss ${m.loss.toFixed(4)}`);
      if (m.step === 1) trainer.pause();
    },
    onCheckpoint: async (bytes, step) => {
      checkpoints.push({ step, bytes });
    },
  });
  while (trainer.state !== 'paused' && trainer.state !== 'done' && trainer.state !== 'failed') await sleep(20);
  out.pausedState = trainer.state;
  out.pausedAt = trainer.stepsDone;
  // While paused: streamed generation, and one aborted after its first chunk.
  const generation = engine.generate('Reverse: abc ->', { maxTokens: 6, temperature: 0 });
  let streamed = '';
  for await (const chunk of generation) streamed += chunk;
  out.generation = { streamed, ...(await generation.result) };
  const controller = new AbortController();
  const aborted = engine.generate('Reverse: xyz ->', { maxTokens: 50, temperature: 0, signal: controller.signal });
  for await (const _ of aborted) controller.abort();
  out.aborted = await aborted.result;
  trainer.resume();
  out.summary = await training;
  await iterating;
  out.progress = progress;
  out.iterated = iterated;
  out.checkpoints = checkpoints.map((c) => ({ step: c.step, size: c.bytes.length }));
  out.trainerEval = await trainer.evaluate();

  const peft = await engine.exportAdapter({ format: 'peft' });
  const gguf = await engine.exportAdapter({ format: 'gguf' });
  out.peft = {
    fileName: peft.fileName,
    files: Object.fromEntries(Object.entries(peft.files).map(([name, bytes]) => [name, bytes.length])),
    config: JSON.parse(new TextDecoder().decode(peft.files['adapter_config.json'])),
    zip: await bytesOf(peft.blob),
  };
  out.gguf = { fileName: gguf.fileName, bytes: await bytesOf(gguf.blob) };

  out.evalTuned = await engine.evaluate(demo.eval);
  out.evalBase = await engine.evaluate(demo.eval, { adapter: 'base' });
  out.loadAdapter = await engine.loadAdapter(peft.blob);
  out.evalLoaded = await engine.evaluate(demo.eval);

  // The base with the adapter folded in, streamed into a zip (no directory given).
  const merged = await engine.exportAdapter({ format: 'merged' });
  out.merged = { fileName: merged.fileName, files: Object.keys(merged.files), zip: await bytesOf(merged.blob) };

  // Resuming from the checkpoint taken at the pause reproduces the run.
  const resumed = await engine.createTrainer({ data: demo.train, evalData: demo.eval, config, checkpoint: checkpoints[0].bytes });
  out.resumedFrom = resumed.stepsDone;
  out.resumedSummary = await resumed.train();

  // Other methods: a bottleneck adapter exports as AdapterHub files (and loads back from them),
  // not as GGUF; IA3 and DoRA train too.
  const seqBn = await engine.createTrainer({ data: demo.train, config: { method: 'seq-bn', reductionFactor: 8, steps: 2 } });
  out.seqBnFacts = seqBn.report.facts;
  out.seqBnSummary = await seqBn.train();
  const adapterhub = await engine.exportAdapter({ format: 'adapterhub' });
  out.adapterhub = { fileName: adapterhub.fileName, files: Object.keys(adapterhub.files).sort() };
  try {
    await engine.exportAdapter({ format: 'gguf' });
  } catch (e) {
    out.seqBnGguf = codeOf(e);
  }
  out.loadAdapterHub = await engine.loadAdapter(adapterhub.blob);
  out.methods = {};
  for (const config of [{ method: 'ia3' as const }, { dora: true }]) {
    const t = await engine.createTrainer({ data: demo.train, config: { ...config, steps: 2 } });
    const summary = await t.train();
    (out.methods as Record<string, unknown>)[JSON.stringify(config)] = { summary, trainable: t.report.facts.trainableParameters };
  }

  // A Hugging Face style source with a sharded checkpoint (served by the test under /hub): the
  // second load comes from Cache Storage.
  out.hub = [];
  for (let i = 0; i < 2; i++) {
    const events = new Set<string>();
    const info = await engine.loadModel(
      { hub: 'webtune/demo-sharded', baseUrl: `${location.origin}/hub` },
      { onProgress: (p) => events.add(`${p.phase}:${p.file ?? ''}`) },
    );
    (out.hub as unknown[]).push({ name: info.name, parameters: info.parameters, events: [...events].sort() });
  }

  // Errors keep their code across the worker boundary.
  const badConfig = { batch_size: 4 } as unknown as TrainingConfig; // snake_case: a common slip
  try {
    await engine.createTrainer({ data: demo.train, config: badConfig });
  } catch (e) {
    out.badOption = codeOf(e);
  }
  try {
    await engine.loadModel({ urls: { 'config.json': new URL('/missing/config.json', location.href) } });
  } catch (e) {
    out.missingFile = codeOf(e);
  }
  engine.dispose();
  try {
    await engine.evaluate(demo.eval);
  } catch (e) {
    out.afterDispose = codeOf(e);
  }
}

try {
  await run(await createWorkerEngine());
} catch (e) {
  out.error = { ...codeOf(e), stack: (e as Error).stack };
  log(`failed: ${String(e)}`);
}
(window as unknown as { __result: unknown }).__result = out;
