//! Causal language models loaded from Hugging Face folders: config, weights, tokenizer, forward.

pub mod attention;
pub mod config;
pub mod files;
mod gemma3;
mod gpt2;
pub mod header;
pub mod layers;
mod llama;
pub mod load;
pub mod table;
pub mod tokenizer;
pub mod weights;

use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor};
use safetensors::Dtype;

use crate::device::GpuInfo;
use crate::err;
use crate::error::Result;
use crate::kernels::LossChunks;
pub use attention::{AttentionContext, KvCache};
pub use config::{Architecture, LayerAttention, ModelConfig};
pub use files::FileSource;
use gemma3::Gemma3;
use gpt2::Gpt2;
use header::Headers;
pub use layers::{LayerHooks, Linear, LinearShape, NoAdapter, SubBlock, WeightLayout};
use llama::Llama;
pub use load::{LoadOptions, LoadReport, StoragePlan, WeightsDtype};
use table::Table;
pub use tokenizer::TextTokenizer;

/// What an architecture provides: its weights' names and shapes, and the forward pass.
trait Decoder: Send + Sync {
    /// The token embedding table, and the factor its rows are scaled by as input embeddings
    /// (Gemma's √hidden).
    fn token_embeddings(&self) -> (&Table, Option<f32>);

    /// The residual stream `[tokens, hidden]` entering the first decoder layer, from the input
    /// embeddings (GPT-2 adds its learned positions).
    fn stream(&self, embeds: Tensor<2>, ctx: &AttentionContext) -> Tensor<2> {
        let _ = ctx;
        embeds
    }

    /// Decoder layer `l`: the residual stream `x [tokens, hidden]` in, the next one out.
    fn layer(
        &self,
        c: &ModelConfig,
        l: usize,
        x: Tensor<2>,
        ctx: &mut AttentionContext,
        hooks: &dyn LayerHooks,
    ) -> Tensor<2>;

    /// The norm after the last layer.
    fn final_norm(&self, x: Tensor<2>) -> Tensor<2>;

    /// The output projection `[vocab, hidden]` (the embedding table when tied).
    fn head(&self) -> &Table;
}

/// A model as config.json describes it, without weights: its linear layers (what adapters
/// target) and its size. Known before anything is downloaded, so run facts and memory estimates
/// of a hub model need only its config; a loaded [`CausalLm`] has the same shape.
#[derive(Clone, Debug)]
pub struct ModelShape {
    pub config: ModelConfig,
    /// Every linear layer, indexed by slot.
    pub linears: Vec<LinearShape>,
    /// Number of weights (embeddings counted once when tied), as transformers' `num_parameters`.
    pub parameters: usize,
}

impl ModelShape {
    pub fn of(config: ModelConfig) -> Self {
        let spec = weight_spec_of(&config);
        Self::with_spec(config, &spec)
    }

    fn with_spec(config: ModelConfig, spec: &weights::WeightSpec) -> Self {
        ModelShape { linears: spec.linears().to_vec(), parameters: spec.parameters(), config }
    }

    /// `in · out` of the largest linear layer.
    pub fn largest_linear(&self) -> usize {
        self.linears.iter().map(|l| l.in_features * l.out_features).max().unwrap_or(0)
    }

    /// The distinct last path components of the linear layers (`q_proj`, `c_attn`, ...), sorted.
    pub fn linear_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.linears.iter().map(|l| l.path.rsplit('.').next().unwrap_or("")).collect();
        names.sort();
        names.dedup();
        names
    }

    /// Whether a checkpoint of this shape stored as `checkpoint` (hub models are BF16) fits the
    /// device `info` describes under `plan`, checked as loading checks it but before anything is
    /// downloaded: the error loading would give (a tensor beyond one binding, weights beyond the
    /// device's memory), naming `file`.
    pub fn check_fits(&self, plan: &StoragePlan, info: &GpuInfo, checkpoint: Dtype, file: &str) -> Result<()> {
        let spec = weight_spec_of(&self.config);
        let headers = spec.as_headers(checkpoint, file);
        let tensors: Vec<(&str, &header::TensorHeader, bool)> = headers.iter().map(|(n, h, t)| (*n, h, *t)).collect();
        load::check_fits(plan, info, &tensors).map(|_| ())
    }
}

/// The tensors an architecture needs for `config`, with their shapes.
fn weight_spec_of(config: &ModelConfig) -> weights::WeightSpec {
    match config.architecture {
        Architecture::Llama | Architecture::Qwen2 | Architecture::Qwen3 => Llama::spec(config),
        Architecture::Gemma3 => Gemma3::spec(config),
        Architecture::Gpt2 => Gpt2::spec(config),
    }
}

/// A causal LM's network on one device. Its weights are frozen: adapters hook in through
/// [`LayerHooks`] (linear layers, residual adds) and through the input embeddings (prompt
/// tuning), never by mutating it.
pub struct CausalLm {
    pub config: ModelConfig,
    /// What loading decided: storage width, split tables, bytes on the device.
    pub report: LoadReport,
    body: Box<dyn Decoder>,
    linears: Vec<Linear>,
    shape: ModelShape,
    /// Largest intermediate (f32 values) one binding holds: bounds the loss's logit chunks.
    max_elements: usize,
    device: Device,
}

impl CausalLm {
    /// Reads `config.json` and the safetensors weights of `source` onto `device`.
    pub fn load(source: &dyn FileSource, device: &Device) -> Result<Self> {
        Self::load_with(source, device, &LoadOptions::default())
    }

    /// [`CausalLm::load`] with a storage width or limits other than the device's defaults.
    pub fn load_with(source: &dyn FileSource, device: &Device, options: &LoadOptions) -> Result<Self> {
        let config = ModelConfig::from_json(&source.read_text("config.json")?)?;
        Self::load_weights(config, source, device, options)
    }

    /// Reads the weights for an already parsed config. The files' headers are checked against
    /// the config (layer count, every tensor's shape and dtype) and the layout against the
    /// device's limits before any weight is read or uploaded.
    pub fn load_weights(
        config: ModelConfig,
        source: &dyn FileSource,
        device: &Device,
        options: &LoadOptions,
    ) -> Result<Self> {
        let headers = Headers::read(source)?;
        let layers = headers.layer_count();
        if layers != config.num_layers {
            return Err(err!(
                InvalidConfig,
                "config.json says num_hidden_layers = {}, but {} hold {layers} decoder layers: the config and the weights are of different models",
                config.num_layers,
                headers.files.join(", ")
            ));
        }
        let spec = weight_spec_of(&config);
        let located = weights::locate(&headers, &spec)?;
        let info = load::effective_device(options, device);
        let checkpoint = located.tensors[embedding_key(&config)].dtype;
        let plan = load::plan(options, &info, checkpoint)?;
        let weight_bytes = load::check_fits(&plan, &info, &located.with_kinds(&spec))?;
        let weights = weights::upload(source, &located, &spec, &plan, device)?;
        Ok(Self::build(config, spec, weights, &plan, checkpoint, weight_bytes, device))
    }

    /// A model with random weights (benchmarks, tests of shapes at scale), laid out as a BF16
    /// checkpoint would be under `options` on `device`.
    pub fn random(config: ModelConfig, device: &Device, options: &LoadOptions) -> Result<Self> {
        let info = load::effective_device(options, device);
        let plan = load::plan(options, &info, Dtype::BF16)?;
        let spec = weight_spec_of(&config);
        let weights = weights::random_weights(&spec, &plan, device);
        let bytes = spec.parameters() as u64 * if plan.f16 { 2 } else { 4 };
        Ok(Self::build(config, spec, weights, &plan, Dtype::BF16, bytes, device))
    }

    fn build(
        config: ModelConfig,
        spec: weights::WeightSpec,
        mut weights: weights::Weights,
        plan: &load::StoragePlan,
        checkpoint: Dtype,
        weight_bytes: u64,
        device: &Device,
    ) -> Self {
        let shape = ModelShape::with_spec(config.clone(), &spec);
        let split_tables = weights.split.clone();
        let kept_f32 = weights.kept_f32.clone();
        let mut table = layers::LinearTable::default();
        let body: Box<dyn Decoder> = match config.architecture {
            Architecture::Llama | Architecture::Qwen2 | Architecture::Qwen3 => {
                Box::new(Llama::build(&config, &mut weights, &mut table))
            }
            Architecture::Gemma3 => Box::new(Gemma3::build(&config, &mut weights, &mut table, checkpoint)),
            Architecture::Gpt2 => Box::new(Gpt2::build(&config, &mut weights, &mut table)),
        };
        let report = LoadReport {
            weights_dtype: if plan.f16 { "f16" } else { "f32" },
            reason: plan.reason.clone(),
            checkpoint_dtype: format!("{checkpoint:?}"),
            weight_bytes,
            split_tables,
            kept_f32,
        };
        CausalLm {
            config,
            report,
            body,
            linears: table.layers,
            shape,
            max_elements: plan.max_elements(),
            device: device.clone(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Number of weights (embeddings counted once when tied), as transformers' `num_parameters`.
    pub fn parameter_count(&self) -> usize {
        self.shape.parameters
    }

    /// The model without its weights: what adapters resolve against.
    pub fn shape(&self) -> &ModelShape {
        &self.shape
    }

    /// Every linear layer, indexed by slot, with its HF module path: what LoRA can target.
    pub fn linears(&self) -> &[Linear] {
        &self.linears
    }

    /// Input embeddings `[ids.len(), hidden]` as the model's embedding module computes them
    /// (Gemma 3 scales them by sqrt(hidden)); ids outside the vocabulary are an error.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor<2>> {
        let vocab = self.config.vocab_size;
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(err!(InvalidTokenizer, "token id {bad} is outside the model's vocabulary of {vocab}"));
        }
        let (table, scale) = self.body.token_embeddings();
        let rows = table.lookup(ids);
        Ok(scale.map_or(rows.clone(), |s| rows * s))
    }

    /// [`CausalLm::embed`] of ids already on the device (a recorded training step's), each below
    /// the vocabulary size; `None` when the table is split into blocks (the host picks each id's).
    pub fn embed_on_device(&self, ids: Tensor<1, Int>) -> Option<Tensor<2>> {
        let (table, scale) = self.body.token_embeddings();
        let rows = table.lookup_on_device(ids)?;
        Some(scale.map_or(rows.clone(), |s| rows * s))
    }

    /// Final hidden states `[tokens, hidden]` for input embeddings `[tokens, hidden]`
    /// (tokens = batch × q_len, row-major) under the attention context `ctx`.
    pub fn hidden(&self, embeds: Tensor<2>, ctx: &mut AttentionContext, hooks: &dyn LayerHooks) -> Tensor<2> {
        let mut x = self.stream(embeds, ctx);
        for l in 0..self.config.num_layers {
            x = self.layer(l, x, ctx, hooks);
        }
        self.final_norm(x)
    }

    /// The residual stream entering decoder layer 0, from input embeddings `[tokens, hidden]`.
    pub fn stream(&self, embeds: Tensor<2>, ctx: &AttentionContext) -> Tensor<2> {
        self.body.stream(embeds, ctx)
    }

    /// Decoder layer `l` on the residual stream `x [tokens, hidden]`: one step of
    /// [`Self::hidden`], which layer-by-layer recomputation runs on its own.
    pub fn layer(&self, l: usize, x: Tensor<2>, ctx: &mut AttentionContext, hooks: &dyn LayerHooks) -> Tensor<2> {
        self.body.layer(&self.config, l, x, ctx, hooks)
    }

    /// The final norm, giving the hidden states the head reads.
    pub fn final_norm(&self, x: Tensor<2>) -> Tensor<2> {
        self.body.final_norm(x)
    }

    /// Logits `[tokens, vocab]` of hidden states `[tokens, hidden]`.
    pub fn logits(&self, hidden: Tensor<2>) -> Tensor<2> {
        self.body.head().project(hidden)
    }

    /// `-Σ log p(target)` over rows of hidden states `[n, hidden]` (`targets.len() = n`, each
    /// below the vocabulary size): the summed token cross-entropy of the loss, in vocabulary
    /// chunks so that no `[n, vocab]` tensor exists (one LM-head product, reading an f16 head as
    /// stored, and one online log-sum-exp kernel per chunk). An unsplit
    /// head goes through [`crate::kernels::cross_entropy_sum_in_chunks`], a head split into row
    /// blocks through [`Table::target_log_probs`], which combines the blocks' log-sum-exps.
    pub fn cross_entropy_sum(&self, hidden: Tensor<2>, targets: &[u32]) -> Tensor<1> {
        let head = self.body.head();
        // Each chunk's logits fit one binding.
        let LossChunks { chunk, keep_logits } = LossChunks::of(targets.len(), head.rows(), self.max_elements);
        match head.single_block() {
            Some(head) => crate::kernels::cross_entropy_sum_in_chunks(hidden, head, targets, chunk, keep_logits),
            None => head.target_log_probs(hidden, targets, chunk, keep_logits).sum().neg(),
        }
    }

    /// Whether the LM head is one block (fits one binding), as [`CausalLm::cross_entropy_rows`]
    /// needs.
    pub fn has_unsplit_head(&self) -> bool {
        self.body.head().block_count() == 1
    }

    /// The token cross-entropy of each row of `hidden [n, hidden]` for `targets [n]` already on
    /// the device (ids as f32; −1 for a row that predicts nothing, whose value is then its
    /// log-sum-exp and must be weighted 0), `[n]`: what [`CausalLm::cross_entropy_sum`] sums.
    /// `None` for a head split into row blocks.
    pub fn cross_entropy_rows(&self, hidden: Tensor<2>, targets: Tensor<1>) -> Option<Tensor<1>> {
        let head = self.body.head();
        let LossChunks { chunk, keep_logits } = LossChunks::of(targets.dims()[0], head.rows(), self.max_elements);
        Some(crate::kernels::cross_entropy_rows_in_chunks(hidden, head.single_block()?, targets, chunk, keep_logits))
    }

    /// Logits `[batch·len, vocab]` of a right-padded batch of token ids (`ids.len() = batch·len`;
    /// `key_mask` 1 for real tokens, `None` when nothing is padded).
    pub fn forward(
        &self,
        ids: &[u32],
        batch: usize,
        key_mask: Option<&[u8]>,
        hooks: &dyn LayerHooks,
    ) -> Result<Tensor<2>> {
        let len = ids.len() / batch;
        let mut ctx = AttentionContext::new(batch, len, key_mask, None, &self.device);
        let hidden = self.hidden(self.embed(ids)?, &mut ctx, hooks);
        Ok(self.logits(hidden))
    }
}

/// The key of the input embedding table, whose dtype is the checkpoint's.
fn embedding_key(config: &ModelConfig) -> &'static str {
    match config.architecture {
        Architecture::Gpt2 => "transformer.wte.weight",
        _ => "model.embed_tokens.weight",
    }
}

/// A model ready to use: the network plus its tokenizer. The network is shared (training,
/// evaluation and generation all read the same frozen weights).
pub struct Model {
    pub lm: Arc<CausalLm>,
    pub tokenizer: Arc<TextTokenizer>,
}

impl Model {
    /// Loads `config.json`, the weights, `tokenizer.json` and `tokenizer_config.json`. The
    /// tokenizer is checked first: it is cheap, and a mismatch makes the weights useless.
    pub fn load(source: &dyn FileSource, device: &Device) -> Result<Self> {
        Self::load_with(source, device, &LoadOptions::default())
    }

    /// [`Model::load`] with a storage width or limits other than the device's defaults.
    pub fn load_with(source: &dyn FileSource, device: &Device, options: &LoadOptions) -> Result<Self> {
        let config = ModelConfig::from_json(&source.read_text("config.json")?)?;
        let tokenizer = TextTokenizer::load(source, &config)?;
        let lm = CausalLm::load_weights(config, source, device, options)?;
        Ok(Model { lm: Arc::new(lm), tokenizer: Arc::new(tokenizer) })
    }

    /// The id batches are padded with: the pad token, else EOS, else 0 (padding is masked out).
    pub fn pad_id(&self) -> u32 {
        self.tokenizer.pad_token_id.or(self.tokenizer.eos_token_ids.first().copied()).unwrap_or(0)
    }
}
