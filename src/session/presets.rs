//! The hub models webtune suggests, known from their `config.json` alone (kept in `presets/`, as
//! the hub serves them): what training one would take on this device is worked out by the same
//! code as for a loaded model ([`ModelShape`], [`RunFacts::planned`], the loader's storage plan and
//! limit checks), before anything is downloaded. `webtune bench --shape NAME` trains random
//! weights of these shapes.

use safetensors::Dtype;
use serde::Serialize;

use super::facts::RunFacts;
use super::memory::Storage;
use crate::device::GpuInfo;
use crate::err;
use crate::error::Result;
use crate::model::{LoadOptions, ModelConfig, ModelShape};
use crate::options::TrainingOptions;
use crate::peft::default_targets;

/// A suggested hub model. Hub checkpoints of all of them are BF16.
#[derive(Debug)]
pub struct Preset {
    /// Short name (`qwen3-0.6b`): the bench's `--shape`.
    pub name: &'static str,
    /// Hugging Face id of the instruction-tuned checkpoint.
    pub hub_id: &'static str,
    config_json: &'static str,
}

/// The checkpoint dtype of every preset.
const CHECKPOINT: Dtype = Dtype::BF16;

pub const PRESETS: &[Preset] = &[
    preset("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct", include_str!("presets/smollm2-135m.json")),
    preset("smollm2-360m", "HuggingFaceTB/SmolLM2-360M-Instruct", include_str!("presets/smollm2-360m.json")),
    preset("gemma3-270m", "google/gemma-3-270m-it", include_str!("presets/gemma3-270m.json")),
    preset("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B-Instruct", include_str!("presets/qwen2.5-0.5b.json")),
    preset("qwen3-0.6b", "Qwen/Qwen3-0.6B", include_str!("presets/qwen3-0.6b.json")),
    preset("llama3.2-1b", "meta-llama/Llama-3.2-1B-Instruct", include_str!("presets/llama3.2-1b.json")),
];

const fn preset(name: &'static str, hub_id: &'static str, config_json: &'static str) -> Preset {
    Preset { name, hub_id, config_json }
}

impl Preset {
    /// The preset called `name`, or an error listing them.
    pub fn find(name: &str) -> Result<&'static Preset> {
        PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
            let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
            err!(InvalidOptions, "no model preset \"{name}\"; the presets are {}", names.join(", "))
        })
    }

    pub fn config(&self) -> ModelConfig {
        ModelConfig::from_json(self.config_json).expect("a preset's config.json parses (tested)")
    }

    /// [`Preset::config`] cut to its first `layers` decoder layers (at least 1, at most all), for
    /// quick benchmarks.
    pub fn config_with_layers(&self, layers: Option<usize>) -> ModelConfig {
        let mut config = self.config();
        if let Some(layers) = layers {
            config.num_layers = layers.clamp(1, config.num_layers);
            config.layer_types.truncate(config.num_layers);
        }
        config
    }

    pub fn shape(&self) -> ModelShape {
        ModelShape::of(self.config())
    }

    /// What the list of suggestions shows before the user picks one.
    pub fn info(&self) -> PresetInfo {
        let shape = self.shape();
        PresetInfo {
            name: self.name,
            hub_id: self.hub_id,
            architecture: shape.config.architecture.name(),
            parameters: shape.parameters,
            checkpoint_dtype: format!("{CHECKPOINT:?}"),
            download_bytes: shape.parameters as u64 * CHECKPOINT.bitsize() as u64 / 8,
            linear_layers: shape.linear_names().into_iter().map(str::to_owned).collect(),
            default_targets: default_targets(shape.config.architecture),
        }
    }

    /// Training this model with `options` on the device `info` describes (after `load`'s
    /// settings): the storage width loading would pick, whether its weights fit the device's
    /// limits, and the run's facts with that width.
    pub fn facts(&self, options: &TrainingOptions, load: &LoadOptions, info: &GpuInfo) -> Result<PresetFacts> {
        let shape = self.shape();
        let file = format!("{}/model.safetensors", self.hub_id);
        let plan = crate::model::load::plan(load, info, CHECKPOINT)?;
        let problem = shape.check_fits(&plan, info, CHECKPOINT, &file).err().map(|e| e.message);
        let storage = Storage { weight_bytes: if plan.f16 { 2 } else { 4 } };
        Ok(PresetFacts {
            weights_dtype: if plan.f16 { "f16" } else { "f32" },
            weights_reason: plan.reason,
            problem,
            facts: RunFacts::planned(&shape, storage, options)?,
        })
    }
}

/// A suggested model as the page lists it (`ModelPreset` in `npm/src/index.d.ts`).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PresetInfo {
    pub name: &'static str,
    pub hub_id: &'static str,
    pub architecture: &'static str,
    /// Weights (embeddings once when tied), as transformers' `num_parameters`.
    pub parameters: usize,
    pub checkpoint_dtype: String,
    /// Bytes of the weight files to download.
    pub download_bytes: u64,
    /// Names of the linear layers adapters can target (`q_proj`), sorted.
    pub linear_layers: Vec<String>,
    /// PEFT's default LoRA targets for the architecture.
    pub default_targets: Vec<String>,
}

/// What training a preset would take on this device (`PresetFacts` in `npm/src/index.d.ts`).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PresetFacts {
    /// Storage width of the frozen weights loading would pick, and why.
    pub weights_dtype: &'static str,
    pub weights_reason: String,
    /// Why loading would refuse the model on this device (a tensor beyond one binding, weights
    /// beyond its memory), as loading says it; absent when it fits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub facts: RunFacts,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// transformers 5.24 `AutoModelForCausalLM.from_config(config).num_parameters()` of each file.
    #[test]
    fn presets_have_the_parameter_counts_transformers_gives() {
        let expected = [
            ("smollm2-135m", 134_515_008),
            ("smollm2-360m", 361_821_120),
            ("gemma3-270m", 268_098_176),
            ("qwen2.5-0.5b", 494_032_768),
            ("qwen3-0.6b", 596_049_920),
            ("llama3.2-1b", 1_235_814_400),
        ];
        assert_eq!(PRESETS.len(), expected.len());
        for (name, parameters) in expected {
            let info = Preset::find(name).unwrap().info();
            assert_eq!(info.parameters, parameters, "{name}");
            assert_eq!(info.download_bytes, 2 * parameters as u64, "{name}: BF16");
        }
        assert!(Preset::find("gpt-5").unwrap_err().message.contains("qwen3-0.6b"));
    }

    fn device(shader_f16: bool, binding: u64, memory: Option<u64>) -> GpuInfo {
        GpuInfo {
            name: "test GPU".into(),
            backend: "Vulkan".into(),
            max_storage_buffer_binding_size: binding,
            max_buffer_size: binding,
            shader_f16,
            memory_bytes: memory,
            shader_loop_limit: None,
        }
    }

    #[test]
    fn facts_say_the_storage_width_and_what_does_not_fit() {
        let options = TrainingOptions::default();
        let load = LoadOptions::default();
        let qwen3 = Preset::find("qwen3-0.6b").unwrap();
        let half = qwen3.facts(&options, &load, &device(true, 1 << 30, None)).unwrap();
        assert_eq!((half.weights_dtype, half.problem.as_deref()), ("f16", None));
        assert_eq!(half.facts.memory.weights, 2 * 596_049_920);
        assert_eq!(half.facts.layers.len(), 2 * 28, "PEFT's default targets: q_proj and v_proj of 28 layers");
        let full = qwen3.facts(&options, &load, &device(false, 1 << 30, None)).unwrap();
        assert_eq!(full.weights_dtype, "f32");
        assert!(full.weights_reason.contains("no shader-f16"), "{}", full.weights_reason);
        assert_eq!(full.facts.memory.weights, 4 * 596_049_920);

        // Llama 3.2 1B: an MLP matrix of 8192 × 2048 is 64 MiB as f32, beyond a 32 MiB binding;
        // its 128,256-row embedding would be split, so that is not what is refused.
        let llama = Preset::find("llama3.2-1b").unwrap();
        let small = llama.facts(&options, &load, &device(true, 32 << 20, None)).unwrap();
        let problem = small.problem.expect("refused");
        assert!(problem.contains("meta-llama/Llama-3.2-1B-Instruct/model.safetensors"), "{problem}");
        assert!(problem.contains("mlp."), "{problem}");
        let scarce = llama.facts(&options, &load, &device(false, 1 << 30, Some(2 << 30))).unwrap();
        assert!(scarce.problem.expect("refused").contains("the weights need 4.60 GiB stored as f32"));
    }
}
