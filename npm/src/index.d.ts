/**
 * webtune: private, in-browser fine-tuning of small language models on WebGPU.
 *
 * One engine object (on the page's thread with `createEngine`, or in a Web Worker with
 * `createWorkerEngine`, same API) loads a model, trains a LoRA / PiSSA / prompt-tuning adapter on
 * the user's data, generates text with or without it, and exports it as PEFT files or GGUF.
 * Nothing leaves the machine: the only network requests are for the model files you point it at.
 */

/** Stable error codes (`error.code`). */
export type ErrorCode =
  /** The browser has no usable WebGPU (message names the browsers and flags that work). */
  | "NO_WEBGPU"
  /** `webtune_bg.wasm` could not be fetched or compiled (see `wasmUrl`). */
  | "WASM"
  /** The worker of `createWorkerEngine` could not start or died (see `workerUrl`). */
  | "WORKER"
  /** A file the operation needs is absent (not picked, or HTTP 404). */
  | "FILE_MISSING"
  /** A download failed (network, CORS, HTTP error, gated model). */
  | "DOWNLOAD"
  | "IO"
  | "INVALID_CONFIG"
  | "UNSUPPORTED_ARCHITECTURE"
  | "CORRUPT_WEIGHTS"
  | "MISSING_TENSOR"
  | "SHAPE_MISMATCH"
  | "INVALID_TOKENIZER"
  | "INVALID_DATASET"
  | "INVALID_ADAPTER"
  /** Unknown or out-of-range option (unknown keys of a config object are rejected). */
  | "INVALID_OPTIONS"
  /** The GPU failed: out of memory, a buffer over the device's limits, or a model too large for
   * them (found from the weight files' headers before anything is loaded). */
  | "GPU"
  /** The GPU device was lost (driver reset, GPU removed, or taken back by the browser): the
   * engine cannot use it any more. `dispose()` it and create a new engine, which gets a new
   * device; continue from the last checkpoint (`createTrainer({checkpoint})`). */
  | "DEVICE_LOST"
  /** No model is loaded yet: call `loadModel()` first. */
  | "NO_MODEL"
  /** The operation needs a tuned adapter: train one or `loadAdapter()` first. */
  | "NO_ADAPTER"
  /** Not possible right now (e.g. `train()` while training, a new model while a trainer runs). */
  | "INVALID_STATE"
  /** Aborted through an `AbortSignal`. */
  | "ABORTED"
  /** The engine was disposed. */
  | "ENGINE_DISPOSED"
  /** A bug in webtune; the message says so. Reload the page. */
  | "INTERNAL";

/** Every error the engine rejects with: `message` says what happened and what to do. */
export declare class WebtuneError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown });
}

export interface EngineOptions {
  /** Where `webtune_bg.wasm` is; default: `./wasm/webtune_bg.wasm` next to this module
   * (`new URL(..., import.meta.url)`, which bundlers such as Vite rewrite). */
  wasmUrl?: string | URL;
}

/** Worker variant: the same API, with all GPU work in a dedicated module Web Worker. */
export interface WorkerEngineOptions extends EngineOptions {
  /** Where the package's `worker.js` is; default: the file next to this module. */
  workerUrl?: string | URL;
  /** A module worker you started yourself whose code does `import "webtune/worker"`. */
  worker?: Worker;
  /** Start the worker from a same-origin `blob:` URL that imports worker.js, so that it inherits
   * the page's Content-Security-Policy (a policy in a `<meta>` tag does not reach a worker loaded
   * from its own URL); the policy must allow `worker-src blob:`. Default false. */
  inheritCsp?: boolean;
}

/** An engine on the calling thread. Rejects with `NO_WEBGPU`, `WASM` or `GPU` (the browser
 * refused a device). */
export declare function createEngine(options?: EngineOptions): Promise<Engine>;
/** An engine in a module Web Worker, so the page stays responsive. Same API as `createEngine`.
 * Without WebGPU on the calling thread it rejects with `NO_WEBGPU` before starting the worker. */
export declare function createWorkerEngine(options?: WorkerEngineOptions): Promise<Engine>;

/** The GPU the engine trains on. */
export interface GpuInfo {
  name: string;
  backend: string;
  /** Largest buffer one kernel can bind: bounds the biggest tensor (e.g. logits). */
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
  /** Whether kernels compute in f16 (`shader-f16`): without it, F16/BF16 checkpoints are stored
   * in f32 (twice their size). */
  shaderF16: boolean;
  /** Memory the weights must fit in, where known (never in browsers: `null`). */
  memoryBytes: number | null;
}

/** Where a model comes from. All sources need the Hugging Face layout: `config.json`,
 * `model.safetensors` (or `model.safetensors.index.json` + shards), `tokenizer.json`,
 * `tokenizer_config.json`. `name` (default: the hub id, folder or `_name_or_path`) is what
 * exports write as `base_model_name_or_path`. */
export type ModelSource =
  /** Files the user picked or dropped (paths such as `SmolLM2/config.json` are fine). */
  | { files: FileList | File[] | Record<string, Blob | ArrayBuffer | Uint8Array>; name?: string }
  /** A Hugging Face model id, fetched from `${baseUrl}/${hub}/resolve/${revision}/...`
   * (default baseUrl `https://huggingface.co`, revision `main`). */
  | { hub: string; revision?: string; baseUrl?: string; cache?: boolean; name?: string }
  /** The URL of a folder with the layout above. */
  | { url: string | URL; cache?: boolean; name?: string }
  /** One URL per file (e.g. bundler-emitted assets), keyed by file name. */
  | { urls: Record<string, string | URL>; cache?: boolean; name?: string };

/** Downloads are kept in the browser's Cache Storage (`cache`, default true) so a reload does not
 * download again; `phase: "cache"` reports such a hit. */
export interface LoadProgress {
  /** `download`: bytes arriving; `cache`: read from browser storage; `load`: picked files read /
   * onto the GPU. */
  phase: "download" | "cache" | "load";
  file?: string;
  /** Bytes (download, cache) or steps (load) so far. */
  loaded: number;
  /** 0 when the server does not say. */
  total: number;
}

export interface LoadModelOptions {
  /** Overrides the source's name. */
  name?: string;
  onProgress?: (progress: LoadProgress) => void;
  /** Aborts the download (rejects with `ABORTED`). */
  signal?: AbortSignal;
}

export interface ModelInfo {
  name: string;
  architecture: "llama" | "qwen2" | "qwen3" | "gemma3" | "gpt2";
  /** Parameters in the weight files. */
  parameters: number;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  /** Width of one attention head (`head_dim`; not always `hiddenSize / numHeads`). */
  headDim: number;
  intermediateSize: number;
  maxPositions: number;
  tieWordEmbeddings: boolean;
  /** Names of the linear layers LoRA can target (e.g. `q_proj`). */
  linearLayers: string[];
  /** PEFT's default LoRA targets for this architecture. */
  defaultTargets: string[];
  hasChatTemplate: boolean;
  /** How the weights sit on the GPU. */
  weights: {
    /** Storage width of the frozen matrices. */
    weightsDtype: "f16" | "f32";
    /** Why that width, in words. */
    reason: string;
    /** The checkpoint's dtype: `"F32"`, `"F16"`, `"BF16"` or `"F64"`. */
    checkpointDtype: string;
    weightBytes: number;
    /** Matrices stored as row blocks because they exceed the binding limit: [name, blocks]. */
    splitTables: [string, number][];
    /** Matrices kept in f32 under f16 storage (values beyond f16's range). */
    keptF32: string[];
  };
}

/** Every training option, with its default. The same names as the `webtune train` CLI flags.
 * Unknown keys are rejected with `INVALID_OPTIONS`. */
export interface TrainingConfig {
  /** `"lora"` (LoRA, PiSSA, DoRA), `"prompt-tuning"`, `"seq-bn"` / `"double-seq-bn"` (AdapterHub
   * bottleneck adapters after each MLP / after attention and MLP), `"ia3"` (PEFT IA3), default `"lora"` */
  method?: "lora" | "prompt-tuning" | "seq-bn" | "double-seq-bn" | "ia3";
  /** DoRA (method `"lora"` only): a trained magnitude per output row, PEFT's `use_dora`, default false */
  dora?: boolean;
  /** LoRA: `"default"` | `"gaussian"` | `"pissa"` | `"pissa_niter_K"`; prompt tuning: `"random"` |
   * `"text"` | `"sample-vocab"`; bottleneck adapters: `"bert"` | `"mam_adapter"` | `"houlsby"`.
   * default: `"default"` / `"random"` (`"text"` when `initText` is set) / `"bert"` */
  init?: string;
  /** prompt tuning: the text whose tokens initialise the virtual tokens */
  initText?: string;
  /** LoRA rank, default 8 */
  r?: number;
  /** default 16 */
  alpha?: number;
  /** default 0 */
  dropout?: number;
  /** LoRA / IA3 module-name suffixes; default: PEFT's for the architecture (LoRA's are
   * `ModelInfo.defaultTargets`). */
  targets?: string[];
  /** rsLoRA scaling alpha/√r, default false */
  rslora?: boolean;
  /** per-module rank overrides, default {} */
  rankPattern?: Record<string, number>;
  /** per-module alpha overrides, default {} */
  alphaPattern?: Record<string, number>;
  /** prompt tuning, default 20 */
  virtualTokens?: number;
  /** bottleneck adapters: width = floor(hidden size / reductionFactor), default 16 */
  reductionFactor?: number;
  /** bottleneck adapters: `"relu"` | `"swish"` | `"silu"` | `"gelu"` | `"gelu_new"` | `"tanh"` | ...;
   * default: `"relu"` (seq-bn) / `"swish"` (double-seq-bn) */
  nonLinearity?: string | null;
  /** bottleneck adapters: the name in every AdapterHub weight key, default: `"adapter"` */
  adapterName?: string | null;
  /** IA3: the targets whose input (not output) is scaled; default: PEFT's for the architecture */
  feedforwardModules?: string[] | null;
  /** default 2e-4 (LoRA) / 3e-2 (prompt tuning) / 1e-4 (bottleneck adapters) / 3e-3 (IA3) */
  lr?: number;
  /** AdamW weight decay, default 0 */
  weightDecay?: number;
  /** default `"linear"` */
  schedule?: "constant" | "linear" | "cosine";
  /** default 0 */
  warmupSteps?: number;
  /** default 4 */
  batchSize?: number;
  /** default 1 */
  gradAccum?: number;
  /** global gradient-norm clip, default 1 (0 or null disables) */
  clip?: number | null;
  /** optimizer steps (overrides epochs), default: from epochs */
  steps?: number | null;
  /** default 1 */
  epochs?: number;
  /** truncate examples to this many tokens, default 512 */
  maxLen?: number;
  /** evaluate every N steps (and at the end), default never */
  evalEvery?: number | null;
  /** stop after this many evaluations without improvement, default off */
  earlyStoppingPatience?: number | null;
  /** default 0 */
  earlyStoppingThreshold?: number;
  /** default true (seeded) */
  shuffle?: boolean;
  /** default 42 */
  seed?: number;
  /** Jinja template for instruction/input/output rows (default: Alpaca) */
  template?: string | null;
  /** skip malformed rows instead of failing, default false */
  skipBadRows?: boolean;
  /** fraction of rows held out for evaluation when no eval data is given, default 0 */
  evalSplit?: number;
  /** recompute each decoder layer in the backward pass instead of keeping its activations
   * (less memory, one more forward pass of the layers); `"auto"`: when they would exceed
   * 512 MiB (`MemoryEstimate.recomputeLayers` says what a run does); default `"auto"` */
  recompute?: "auto" | "on" | "off";
}

/** A dataset: a picked file, named text or bytes, a URL (the name's extension picks the format:
 * .jsonl .json .csv .txt), or rows as objects (treated as JSONL). */
export type DatasetSource =
  | File
  | { name: string; data: string | ArrayBuffer | Uint8Array | Blob }
  | { url: string | URL; name?: string }
  | URL
  | Array<Record<string, unknown>>;

export interface RowError {
  line: number;
  reason: string;
}

export interface DatasetReport {
  /** Usable examples. */
  rows: number;
  /** Malformed rows that were skipped (with `skipBadRows`), with their line numbers. */
  badRows: RowError[];
  /** Examples cut to `maxLen` tokens. */
  truncated: number;
  /** Examples dropped because truncation left nothing to learn. */
  noSupervisedTokens: number;
  minTokens: number;
  meanTokens: number;
  maxTokens: number;
  supervisedTokens: number;
}

export interface DatasetPreview {
  rows: PreviewRow[];
  /** `null` when no row is usable. */
  report: DatasetReport | null;
}

export interface PreviewRow {
  line: number;
  /** The text the model sees, split into runs; `supervised` runs are what it learns to write. */
  segments: PreviewSegment[];
  /** Length in tokens, after truncation. */
  tokens: number;
  truncated: boolean;
  /** Why the row will not be used (malformed, or nothing left to learn after truncation). */
  error?: string;
}

export interface PreviewSegment {
  text: string;
  supervised: boolean;
}

export interface StepMetrics {
  step: number;
  totalSteps: number;
  epoch: number;
  loss: number;
  lr: number;
  gradNorm: number;
  tokens: number;
  supervisedTokens: number;
  evalLoss?: number;
  /** Set on the step after which early stopping ended training (the best adapter is kept). */
  earlyStopped?: boolean;
  /** Tokens per second of training time so far (pauses excluded). */
  tokensPerSecond: number;
  /** Training time so far, pauses excluded. */
  elapsedMs: number;
  /** Estimated time to the last step. */
  etaMs: number;
}

export interface TrainSummary {
  steps: number;
  finalLoss?: number;
  evalLoss?: number;
  bestEvalLoss?: number;
  stoppedEarly: boolean;
  /** `"done"`, or `"stopped"` after `stop()`. */
  state: "done" | "stopped";
}

export interface TrainOptions {
  onProgress?: (metrics: StepMetrics) => void;
  /** Also take a checkpoint every N steps (for `onCheckpoint`). */
  checkpointEvery?: number;
  /** Receives a checkpoint at every pause and every `checkpointEvery` steps; training waits for
   * a returned promise. Store it (e.g. IndexedDB) to resume after a reload. */
  onCheckpoint?: (checkpoint: Uint8Array, step: number) => void | Promise<void>;
}

/** `"warming"`: the first `train()` compiles the GPU pipelines of the run's batch shapes
 * (`Trainer.warmUp`) before the first step. */
export type TrainerState = "idle" | "warming" | "running" | "paused" | "stopped" | "done" | "failed";

export interface TrainReport {
  train: DatasetReport;
  /** `null` when the eval set is split off the training data (`evalSplit`). */
  eval: DatasetReport | null;
  /** Examples left for training after any eval split. */
  trainExamples: number;
  evalExamples: number;
  /** What the run trains and needs, for the data actually loaded. */
  facts: RunFacts;
  /** The adapter being trained: its method and the formats it exports as. */
  adapter: AdapterInfo;
}

/** What a run will train and need: `engine.runFacts(config)` before any data is loaded (the
 * largest workload the config allows), and `Trainer.report.facts` for the loaded data. */
export interface RunFacts {
  trainableParameters: number;
  /** The adapted modules, in model order (empty for prompt tuning). */
  layers: AdaptedLayer[];
  /** Virtual tokens in front of every sequence (prompt tuning; 0 for LoRA). */
  virtualTokens: number;
  memory: MemoryEstimate;
}

/** A hub model webtune suggests, known from its config.json alone (`engine.modelPresets()`). */
export interface ModelPreset {
  /** Short name, e.g. `qwen3-0.6b` (also `webtune bench --shape`). */
  name: string;
  /** Hugging Face id, e.g. `Qwen/Qwen3-0.6B`: a `ModelSource` `{ hub }`. */
  hubId: string;
  architecture: string;
  /** Weights (embeddings once when tied), as transformers' `num_parameters`. */
  parameters: number;
  /** The hub checkpoint's dtype (`BF16`). */
  checkpointDtype: string;
  /** Bytes of weights to download. */
  downloadBytes: number;
  /** Names of the linear layers adapters can target (`q_proj`), sorted. */
  linearLayers: string[];
  /** PEFT's default LoRA targets for the architecture. */
  defaultTargets: string[];
}

/** What training a preset would take on this GPU (`engine.presetFacts(name, config)`), before
 * anything is downloaded: worked out as loading and `runFacts` would once it is. */
export interface PresetFacts {
  /** The storage width loading would pick for the frozen weights, and why. */
  weightsDtype: "f16" | "f32";
  weightsReason: string;
  /** Why loading would refuse the model on this GPU, as loading would say it; absent when it fits. */
  problem?: string;
  facts: RunFacts;
}

export interface AdaptedLayer {
  /** Hugging Face module path, e.g. `model.layers.0.self_attn.q_proj`; for a bottleneck adapter
   * its AdapterHub key prefix, which names the placement (`model.layers.0.output_adapters.adapters.adapter`). */
  path: string;
  /** `"ia3"` scales the layer's output, `"ia3-feedforward"` its input. */
  kind: "lora" | "dora" | "ia3" | "ia3-feedforward" | "bottleneck";
  inFeatures: number;
  outFeatures: number;
  /** The LoRA rank or the bottleneck width; 0 for IA3. */
  rank: number;
  /** Trainable values in this module. */
  parameters: number;
}

/** Estimated GPU memory of training, in bytes, from the model's real layer shapes (the formula is
 * documented in the crate's `session::memory`). */
export interface MemoryEstimate {
  /** Bytes per stored base weight assumed (4: f32). */
  weightBytes: number;
  weights: number;
  adapter: number;
  gradients: number;
  /** AdamW's two moments. */
  optimizer: number;
  /** What the backward pass keeps for one micro-batch. */
  activations: number;
  /** Logits, log-probabilities and their gradient at the supervised positions. */
  logits: number;
  total: number;
  /** The largest single buffer: must fit `GpuInfo.maxStorageBufferBindingSize`. */
  largestBuffer: number;
  /** The backward pass recomputes each decoder layer (`TrainingConfig.recompute`): then
   * `activations` are each layer's input plus one layer's activations. */
  recomputeLayers: boolean;
}

/** What an adapter is. */
export interface AdapterInfo {
  /** `"LORA"`, `"PROMPT_TUNING"`, `"IA3"` (PEFT's `peft_type`) or `"BOTTLENECK"` (AdapterHub's). */
  peftType: string;
  /** `"lora"` | `"pissa"` | `"dora"` | `"ia3"` | `"prompt_tuning"` | `"seq_bn"` | `"double_seq_bn"` */
  method: string;
  trainableParameters: number;
  /** The formats `exportAdapter` can write for this adapter: PEFT for LoRA/DoRA/IA3/prompt tuning,
   * AdapterHub for bottleneck adapters, GGUF for plain LoRA, a merged model for LoRA/DoRA/IA3. */
  exportFormats: ExportFormat[];
}

export type ExportFormat = "peft" | "adapterhub" | "gguf" | "merged";

export interface Trainer {
  readonly totalSteps: number;
  readonly stepsDone: number;
  readonly state: TrainerState;
  /** What loading the data found. */
  readonly report: TrainReport;
  /** Runs until done, stopped or failed. Resolves with a summary; rejects with a WebtuneError.
   * After `stop()`, calling it again continues. The first call warms up first (state
   * `"warming"`, see `warmUp`). */
  train(options?: TrainOptions): Promise<TrainSummary>;
  /** Compiles the GPU pipelines of every batch shape the run can meet (a forward and backward
   * pass per padded length, discarded), so that no step waits for shader compilation, seconds per
   * new shape in a browser. Changes nothing in the run; once per trainer (`train()` calls it).
   * Resolves to the number of shapes warmed. */
  warmUp(): Promise<number>;
  /** Every step's metrics from now on as they happen; ends when training stops or ends, throws
   * if it fails. */
  metrics(): AsyncIterableIterator<StepMetrics>;
  /** Pauses after the current step (then generate, evaluate or export freely). */
  pause(): void;
  resume(): void;
  /** Stops after the current step; `train()` resolves with state `"stopped"`. */
  stop(): void;
  /** Eval loss of the current adapter on the eval data. */
  evaluate(): Promise<number>;
  /** The full training state, to resume exactly later (`createTrainer({checkpoint})`). */
  checkpoint(): Promise<Uint8Array>;
  /** Frees the trainer's GPU memory; its adapter stays the engine's tuned adapter. */
  dispose(): void;
}

export interface CreateTrainerOptions {
  data: DatasetSource;
  /** default: `config.evalSplit` of `data`, or none */
  evalData?: DatasetSource;
  config?: TrainingConfig;
  /** Continue training this adapter (PEFT files or zip) instead of a fresh one. */
  adapter?: AdapterFiles;
  /** Resume a run from `Trainer.checkpoint()` (same model, data and config). */
  checkpoint?: Uint8Array | ArrayBuffer;
}

/** Adapter files: PEFT's (`adapter_config.json` + `adapter_model.safetensors`) or AdapterHub's
 * (`adapter_config.json` + `adapter.safetensors`), as exported or as picked by the user, or the
 * `adapter.zip` that `exportAdapter({format: "peft" | "adapterhub"})` makes. */
export type AdapterFiles = Record<string, Blob | ArrayBuffer | Uint8Array> | FileList | File[] | Blob | ArrayBuffer | Uint8Array;

/** The two files of a PEFT or AdapterHub adapter, read from a pick, a drop, a record or a zip (no
 * GPU, no engine): what `loadAdapter` and `createTrainer({adapter})` read, for an app that keeps or
 * inspects them. Rejects with `FILE_MISSING` or `INVALID_ADAPTER` (a GGUF file, a damaged zip, a
 * pickled `adapter_model.bin` / `pytorch_adapter.bin`, with how to re-save it as safetensors). */
export declare function readAdapterFiles(
  files: AdapterFiles,
): Promise<{ config: string; weights: Uint8Array; weightsFile: "adapter_model.safetensors" | "adapter.safetensors" }>;

export interface ExportOptions {
  /** One of the adapter's `AdapterInfo.exportFormats`; another is refused with `INVALID_OPTIONS`
   * naming the formats it has. */
  format: ExportFormat;
  /** `"merged"`: write the model folder into this directory (from `showDirectoryPicker()`, which
   * needs the user's click, so the page calls it) instead of returning a zip. */
  directory?: FileSystemDirectoryHandle;
  /** Write a PiSSA adapter as a plain LoRA for the original base model, default true. */
  pissaAsLora?: boolean;
  /** `base_model_name_or_path` in adapter_config.json, default `ModelInfo.name`. */
  baseModel?: string;
}

export interface ExportedAdapter {
  /** The individual files (`adapter_model.safetensors`, `adapter_config.json`, `README.md`;
   * `adapter.safetensors`, `adapter_config.json`; or `adapter.gguf`); empty for a merged model,
   * which is never held in memory whole. */
  files: Record<string, Uint8Array>;
  /** One download: a zip of the PEFT or AdapterHub files, the GGUF file, or the merged model folder
   * as a zip (`config.json`, `model.safetensors` in the base's dtype or its shards, tokenizer
   * files), assembled from the pieces as they came; empty when written to `directory`. */
  blob: Blob;
  /** `"adapter.zip"`, `"adapter.gguf"`, `"<model>-merged.zip"`, or the merged folder's suggested name */
  fileName: string;
  /** `"merged"` into a `directory`: the files written there. */
  written?: string[];
}

export interface GenerateOptions {
  /** `"tuned"` (default once an adapter exists) or `"base"`. */
  adapter?: "tuned" | "base";
  /** Wrap the prompt in the model's chat template as a user turn, default false. */
  chat?: boolean;
  /** default 0.7 (0 = greedy) */
  temperature?: number;
  /** default 0.9 */
  topP?: number;
  /** default 128 */
  maxTokens?: number;
  /** default 0 */
  seed?: number;
  /** Ends generation early; `result.finishReason` is then `"aborted"`. */
  signal?: AbortSignal;
}

/** Streamed text: iterate for the chunks; `result` resolves when generation ends. */
export interface Generation extends AsyncIterable<string> {
  readonly result: Promise<GenerationResult>;
}

export interface GenerationResult {
  text: string;
  finishReason: "eos" | "length" | "context" | "aborted";
}

export interface Engine {
  readonly gpu: GpuInfo;
  readonly version: string;
  /** The loaded model, or null. */
  readonly model: ModelInfo | null;
  /** Loads a model (replacing any loaded one). Rejects with `GPU` before reading the weights when
   * a tensor is over the GPU's buffer limits (`gpu`). */
  loadModel(source: ModelSource, options?: LoadModelOptions): Promise<ModelInfo>;
  /** How the first `maxRows` (default 20) rows will be seen, and the whole file's report. */
  previewDataset(data: DatasetSource, config?: TrainingConfig, maxRows?: number): Promise<DatasetPreview>;
  /** What training the loaded model with `config` would train and need (trainable parameters,
   * adapted layers, a GPU memory estimate), before any data is loaded: the largest workload the
   * config allows. `Trainer.report.facts` has the same for the loaded data. */
  runFacts(config?: TrainingConfig): Promise<RunFacts>;
  /** The hub models webtune suggests (SmolLM2, Gemma 3, Qwen2.5, Qwen3, Llama 3.2), from their
   * config.json alone: nothing is fetched. */
  modelPresets(): Promise<ModelPreset[]>;
  /** What training preset `name` with `config` would take on this GPU: storage width, whether it
   * fits the GPU's limits, trainable parameters and a memory estimate. Rejects with
   * `INVALID_OPTIONS` for an unknown name or options the core refuses. */
  presetFacts(name: string, config?: TrainingConfig): Promise<PresetFacts>;
  /** Prepares a training run on the loaded model; its adapter becomes the engine's "tuned" one. */
  createTrainer(options: CreateTrainerOptions): Promise<Trainer>;
  /** Makes a PEFT adapter the engine's "tuned" adapter (to try it, evaluate or re-export it). */
  loadAdapter(files: AdapterFiles): Promise<AdapterInfo>;
  generate(prompt: string, options?: GenerateOptions): Generation;
  /** Loss of an adapter (default: tuned if any, else base) on a dataset. */
  evaluate(data: DatasetSource, options?: { adapter?: "tuned" | "base"; config?: TrainingConfig }): Promise<{ loss: number; perplexity: number }>;
  /** The tuned adapter as PEFT or AdapterHub files (zip), a llama.cpp GGUF LoRA, or the base model
   * with the adapter folded in (`"merged"`: LoRA, PiSSA, DoRA, IA3), streamed to a directory or a
   * zip. `AdapterInfo.exportFormats` lists what the adapter has. */
  exportAdapter(options: ExportOptions): Promise<ExportedAdapter>;
  /** Times LoRA training steps (r 8 on q/k/v/o, random token ids, every position supervised) on
   * the loaded model or on a suggested model's shape with random weights, and counts what each
   * asks of WebGPU. Figures only; nothing of the user's is touched. Rejects with `NO_MODEL`
   * without a model and without `shape`. */
  bench(options?: BenchOptions): Promise<BenchResult>;
  /** Frees the GPU (and terminates the worker for `createWorkerEngine`). Later calls reject
   * with `ENGINE_DISPOSED`. */
  dispose(): void;
}

export interface BenchOptions {
  /** A `ModelPreset.name` (`"smollm2-135m"`): its shape with random weights instead of the loaded
   * model, default: the loaded model */
  shape?: string | null;
  /** decoder layers of `shape` (fewer for a quick run), default: all */
  layers?: number | null;
  /** default 4 */
  batchSize?: number;
  /** tokens per row, default 128 */
  seqLen?: number;
  /** timed steps after the warm-up, default 3 */
  steps?: number;
  /** as `TrainingConfig.recompute`, default `"auto"` */
  recompute?: "auto" | "on" | "off";
  /** Each step issues the next one's passes while the GPU finishes it, as training does (default
   * `true`). `false` issues each step with the GPU idle, so `hostMs` is the host's issuing alone:
   * with a software GPU (SwiftShader) the GPU's work otherwise shares the CPU with it. */
  overlap?: boolean;
  /** Each step replays the forward and backward passes recorded once for its batch shape, as
   * training does (default `true`); `false` issues them kernel by kernel. */
  replay?: boolean;
}

/** One timed step of `engine.bench()`: what it asked of WebGPU (counted at the API in the thread
 * that owns the device) and the time it took. */
export interface BenchStep {
  step: number;
  loss: number;
  /** Compute dispatches (`dispatchWorkgroups`) at the WebGPU API. */
  dispatches: number;
  /**
   * Kernels the core launched one by one (CubeCL's launch observer): all of `dispatches`, or for a
   * step that replays its passes recorded for the batch's shape, only those outside them.
   */
  coreDispatches: number;
  /** Whether the step replayed its passes recorded for the batch's shape (`BenchOptions.replay`). */
  replayed: boolean;
  submits: number;
  bufferCreations: number;
  bufferWrites: number;
  bindGroups: number;
  /** Pipelines compiled in this step (0 after the warm-up). */
  pipelines: number;
  /** Wall time not spent waiting for a mapped buffer: the host issuing the step. */
  hostMs: number;
  wallMs: number;
}

export interface BenchResult {
  /** The loaded model's architecture, or a preset's hub id with "random weights". */
  model: string;
  layers: number;
  batchSize: number;
  seqLen: number;
  lora: string;
  weightsDtype: "f16" | "f32";
  /** The core's memory estimate for this run. */
  estimate: MemoryEstimate;
  /** Batch shapes compiled before the first timed step, and how long it took. */
  shapesWarmed: number;
  warmUpMs: number;
  steps: BenchStep[];
  /** Medians over the timed steps. */
  median: { dispatches: number; submits: number; bufferCreations: number; hostMs: number; wallMs: number };
  /** Kernels of the forward and backward passes (loss included). */
  gradientDispatches: number;
  /** What one more transformer layer adds to them (measured on 1- and 2-layer copies). */
  dispatchesPerLayer: number;
  /** Embedding, final norm, LM head and loss. */
  dispatchesOutsideLayers: number;
  /** Gradient norm, clipping and the AdamW update. */
  optimizerDispatches: number;
}

/** The bundled demo model and dataset. */
export interface Demo {
  /** A 771K-parameter toy Llama that knows a few word games ("Reverse: abc ->" → " cba"). */
  readonly model: { urls: Record<string, string>; name: string };
  /** 64 "Backwards: abc ->" / " cba" rows: a keyword the model has not seen, learnt in a few dozen steps. */
  readonly train: { url: string; name: string };
  /** 16 rows of the same task, other words. */
  readonly eval: { url: string; name: string };
}

/** The bundled demo: `engine.loadModel(demo.model)`, `createTrainer({data: demo.train, evalData: demo.eval})`. */
export declare const demo: Demo;
