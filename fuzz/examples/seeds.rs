//! Writes the seed corpus of every fuzz target from the test fixtures (and from what webtune
//! itself writes: adapters, GGUF files, checkpoints) into `<out>/<target>/`:
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds -- fuzz/seeds`. Each seed is checked
//! to parse, so a seed made stale by a format change fails here instead of fuzzing nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use safetensors::tensor::TensorView;
use webtune::model::CausalLm;
use webtune::model::weights::{HostTensor, encode_safetensors};
use webtune::peft::files::{ModelCard, export, import};
use webtune::peft::gguf::export_gguf;
use webtune_fuzz::gguf_reader::read_gguf;
use webtune_fuzz::{
    CHATML_TAGGED, block, checkpoint_run, cpu, llama, load_options, memory_files, tiny_config, write_folder,
};

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).expect("usage: seeds <output folder>"));
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let read = |path: &str| std::fs::read(fixtures.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut seeds = Seeds { out, count: 0 };

    // Weights of the tiny models, in each float dtype, single and sharded.
    for (gpt2, tensors) in [(false, tiny_llama()), (true, tiny_gpt2())] {
        let name = if gpt2 { "gpt2" } else { "llama" };
        // Load options (bits 1-2): f32 storage; f16 storage; f16 storage in row blocks.
        for (dtype, options) in [(Dtype::F32, 0), (Dtype::F16, 2), (Dtype::BF16, 6)] {
            let file = safetensors_file(&tensors, dtype);
            let files = memory_files(&[("model.safetensors".to_owned(), file.clone())]);
            CausalLm::load_weights(tiny_config(gpt2), &files, &cpu(), &load_options(0)).expect("the seed weights load");
            seeds.write(
                "safetensors",
                &format!("{name}-{dtype:?}"),
                &[&[u8::from(gpt2) | options], &file[..]].concat(),
            );
        }
        let (first, second): (Vec<_>, Vec<_>) = tensors.iter().enumerate().partition(|(i, _)| i % 2 == 0);
        let shard = |part: Vec<(usize, &(String, HostTensor))>| {
            let map: BTreeMap<String, HostTensor> =
                part.into_iter().map(|(_, (n, t))| (n.clone(), t.clone())).collect();
            encode_safetensors(&map, None)
        };
        let (first, second) = (shard(first), shard(second));
        let weight_map: serde_json::Map<String, serde_json::Value> = tensors
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), format!("model-0000{}-of-00002.safetensors", 1 + i % 2).into()))
            .collect();
        let index = serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": weight_map }).to_string();
        let config = if gpt2 { &b"{\"model_type\": \"gpt2\"}"[..] } else { b"{}" };
        let files = [
            ("config.json", config),
            ("model.safetensors.index.json", index.as_bytes()),
            ("model-00001-of-00002.safetensors", &first[..]),
            ("model-00002-of-00002.safetensors", &second[..]),
        ];
        let folder = write_folder(&files);
        let parsed: Vec<_> = webtune_fuzz::folder(&folder).into_iter().filter(|(n, _)| n != "config.json").collect();
        CausalLm::load_weights(tiny_config(gpt2), &memory_files(&parsed), &cpu(), &load_options(0))
            .expect("the sharded seed loads");
        seeds.write("safetensors_sharded", name, &folder);
    }

    // config.json: the fixtures, the tiny models, and RoPE scaling.
    for model in ["llama", "qwen2", "gpt2", "qwen3", "gemma3"] {
        seeds.write("config", model, &read(&format!("{model}/base/config.json")));
    }
    seeds.write("config", "tiny-llama", include_bytes!("../models/tiny-llama/config.json"));
    seeds.write("config", "tiny-gpt2", include_bytes!("../models/tiny-gpt2/config.json"));
    let llama_config = String::from_utf8(read("llama/base/config.json")).unwrap();
    for (name, rope) in [
        ("rope-linear", r#""rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}"#),
        (
            "rope-llama3",
            r#""rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}"#,
        ),
    ] {
        let text = llama_config.replace(r#""rope_parameters": {"#, &format!("{rope}, \"unused\": {{"));
        webtune::model::ModelConfig::from_json(&text).expect("the RoPE seeds parse");
        seeds.write("config", name, text.as_bytes());
    }

    // Tokenizers: the fixture's, and the ChatML one with a chat template.
    let chat_settings = serde_json::json!({
        "bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|pad|>", "chat_template": CHATML_TAGGED
    })
    .to_string();
    for (name, tokenizer, settings) in [
        ("fixture", read("tokenizer/tokenizer.json"), read("tokenizer/tokenizer_config.json")),
        ("chatml", read("chat_masks/tokenizer.json"), chat_settings.into_bytes()),
    ] {
        let folder = write_folder(&[("tokenizer.json", &tokenizer), ("tokenizer_config.json", &settings)]);
        seeds.write("tokenizer", name, &folder);
    }

    // Chat templates over conversations (the transformers fixture's, and other families').
    let expected: serde_json::Value = serde_json::from_slice(&read("chat_masks/expected.json")).unwrap();
    let rows: String = expected["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{}\n", serde_json::json!({ "messages": c["messages"] })))
        .collect();
    let templates = [
        ("tagged", expected["template_with_generation_tags"].as_str().unwrap()),
        ("plain", expected["template_plain"].as_str().unwrap()),
        (
            "llama3",
            "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
        ),
        (
            "gemma",
            "{{ bos_token }}{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}",
        ),
        (
            "macros",
            "{%- macro turn(m) -%}{{ m.role|upper }}: {{ m.content.strip() }}{{ eos_token if m.role == 'assistant' }}\n{%- endmacro -%}{% for m in messages %}{% if loop.first and m.role != 'system' %}{{ raise_exception('no system') if false }}{% endif %}{{ turn(m) }}{% endfor %}{{ 'ASSISTANT:' if add_generation_prompt }}{{ strftime_now('%d %b %Y')|length }}",
        ),
    ];
    for (name, template) in templates {
        seeds.write(
            "chat_template",
            name,
            &write_folder(&[("template", template.as_bytes()), ("data.jsonl", rows.as_bytes())]),
        );
    }

    // Datasets: the first byte picks the format and options (see fuzz_targets/dataset.rs).
    let train = String::from_utf8(read("data/train.jsonl")).unwrap();
    let jsonl: String = train.lines().take(6).map(|line| format!("{line}\n")).collect();
    let values: Vec<serde_json::Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut csv = String::from("prompt,completion\n");
    for v in &values {
        csv += &format!("\"{}\",\"{}\"\n", v["prompt"].as_str().unwrap(), v["completion"].as_str().unwrap());
    }
    let instructions = "{\"instruction\": \"Reverse the word.\", \"input\": \"dog\", \"output\": \"god\"}\n{\"instruction\": \"Say hi.\", \"output\": \"hi\"}\n";
    let datasets: [(&str, u8, String); 7] = [
        ("jsonl", 0, jsonl.clone()),
        ("json", 1, serde_json::to_string_pretty(&values).unwrap()),
        ("csv", 2, csv),
        ("txt", 3, "Reverse: dog -> god\nsecond line\n\nanother paragraph\n".to_owned()),
        ("chat-truncated", 8, rows.clone()),
        ("instructions-template-skip", 16 | 32, instructions.to_owned()),
        ("mixed-skip", 32, format!("{jsonl}{rows}{instructions}{{\"text\": 3}}\nnot json\n")),
    ];
    for (name, selector, text) in datasets {
        seeds.write("dataset", name, &[&[selector], text.as_bytes()].concat());
    }

    // Adapters: PEFT's and AdapterHub's own folders for the llama fixture, and webtune's exports
    // of the PEFT ones.
    let (lm, _) = llama();
    let mut lora = None;
    for method in ["lora", "dora", "ia3", "prompt_tuning_random", "prompt_tuning_text"] {
        let dir = format!("llama/{method}/final");
        let (config, weights) =
            (read(&format!("{dir}/adapter_config.json")), read(&format!("{dir}/adapter_model.safetensors")));
        let adapter =
            block(import(std::str::from_utf8(&config).unwrap(), &weights, &lm)).expect("the fixture adapter imports");
        seeds.write(
            "adapter",
            method,
            &write_folder(&[("adapter_config.json", &config), ("adapter_model.safetensors", &weights)]),
        );
        let exported = block(export(&adapter, "fixtures/llama/base", false, &ModelCard::default())).unwrap();
        let files = [
            ("adapter_config.json", exported.config_json.as_bytes()),
            ("adapter_model.safetensors", &exported.weights[..]),
        ];
        seeds.write("adapter", &format!("{method}-webtune"), &write_folder(&files));
        if method == "lora" {
            lora = Some((adapter, config, weights));
        }
    }
    for method in ["seq_bn", "double_seq_bn"] {
        let dir = format!("adapterhub/llama/{method}/final");
        let folder = write_folder(&[
            ("adapter_config.json", &read(&format!("{dir}/adapter_config.json"))),
            ("adapter.safetensors", &read(&format!("{dir}/adapter.safetensors"))),
        ]);
        let files = memory_files(&webtune_fuzz::folder(&folder));
        block(webtune::peft::read_adapter(&files, &lm)).expect("the AdapterHub fixture reads");
        seeds.write("adapter", &format!("adapterhub-{method}"), &folder);
    }
    let (lora, config, weights) = lora.unwrap();
    let pissa = String::from_utf8(config)
        .unwrap()
        .replace("\"init_lora_weights\": true", "\"init_lora_weights\": \"pissa_niter_2\"");
    seeds.write(
        "adapter",
        "pissa",
        &write_folder(&[("adapter_config.json", pissa.as_bytes()), ("adapter_model.safetensors", &weights)]),
    );

    // GGUF: webtune's export of the LoRA fixture.
    let gguf = block(export_gguf(&lora, &lm.config)).expect("the LoRA fixture exports to GGUF");
    read_gguf(&gguf).expect("the GGUF seed reads back");
    seeds.write("gguf", "lora", &gguf);

    // Checkpoints of the fuzzed run: before any step and after two.
    let mut run = checkpoint_run();
    let fresh = block(run.checkpoint()).unwrap();
    block(run.step()).unwrap();
    block(run.step()).unwrap();
    let trained = block(run.checkpoint()).unwrap();
    for (name, bytes) in [("fresh", fresh), ("trained", trained)] {
        checkpoint_run().restore(&bytes).expect("the checkpoint seed restores");
        seeds.write("checkpoint", name, &bytes);
    }
    println!("wrote {} seeds to {}", seeds.count, seeds.out.display());
}

struct Seeds {
    out: PathBuf,
    count: usize,
}

impl Seeds {
    fn write(&mut self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.out.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        self.count += 1;
    }
}

/// Deterministic small values, different per tensor.
fn values(count: usize, salt: usize) -> Vec<f32> {
    (0..count).map(|i| (((i * 7 + salt * 13) % 17) as f32 - 8.0) / 40.0).collect()
}

fn tensors(shapes: &[(&str, &[usize])]) -> Vec<(String, HostTensor)> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let data = values(shape.iter().product(), i);
            (name.to_string(), HostTensor { shape: shape.to_vec(), data })
        })
        .collect()
}

/// `fuzz/models/tiny-llama`: hidden 8, 2 heads of 4, 1 KV head, intermediate 12, vocab 16.
fn tiny_llama() -> Vec<(String, HostTensor)> {
    let p = "model.layers.0";
    let names: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![16, 8]),
        (format!("{p}.input_layernorm.weight"), vec![8]),
        (format!("{p}.self_attn.q_proj.weight"), vec![8, 8]),
        (format!("{p}.self_attn.k_proj.weight"), vec![4, 8]),
        (format!("{p}.self_attn.v_proj.weight"), vec![4, 8]),
        (format!("{p}.self_attn.o_proj.weight"), vec![8, 8]),
        (format!("{p}.post_attention_layernorm.weight"), vec![8]),
        (format!("{p}.mlp.gate_proj.weight"), vec![12, 8]),
        (format!("{p}.mlp.up_proj.weight"), vec![12, 8]),
        (format!("{p}.mlp.down_proj.weight"), vec![8, 12]),
        ("model.norm.weight".into(), vec![8]),
        ("lm_head.weight".into(), vec![16, 8]),
    ];
    tensors(&names.iter().map(|(n, s)| (n.as_str(), s.as_slice())).collect::<Vec<_>>())
}

/// `fuzz/models/tiny-gpt2`: n_embd 8, 2 heads, n_inner 12, 32 positions, vocab 16, tied.
fn tiny_gpt2() -> Vec<(String, HostTensor)> {
    let p = "transformer.h.0";
    let mut names: Vec<(String, Vec<usize>)> =
        vec![("transformer.wte.weight".into(), vec![16, 8]), ("transformer.wpe.weight".into(), vec![32, 8])];
    for (layer, input, output) in
        [("attn.c_attn", 8, 24), ("attn.c_proj", 8, 8), ("mlp.c_fc", 8, 12), ("mlp.c_proj", 12, 8)]
    {
        names.push((format!("{p}.{layer}.weight"), vec![input, output]));
        names.push((format!("{p}.{layer}.bias"), vec![output]));
    }
    for norm in [format!("{p}.ln_1"), format!("{p}.ln_2"), "transformer.ln_f".to_owned()] {
        names.push((format!("{norm}.weight"), vec![8]));
        names.push((format!("{norm}.bias"), vec![8]));
    }
    tensors(&names.iter().map(|(n, s)| (n.as_str(), s.as_slice())).collect::<Vec<_>>())
}

/// A safetensors file of `tensors` stored as `dtype`.
fn safetensors_file(tensors: &[(String, HostTensor)], dtype: Dtype) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, t)| match dtype {
            Dtype::F16 => t.data.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
            Dtype::BF16 => t.data.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
            _ => t.data.iter().flat_map(|&v| v.to_le_bytes()).collect(),
        })
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, t), data)| (name.clone(), TensorView::new(dtype, t.shape.clone(), data).unwrap()));
    safetensors::serialize(views, Some(HashMap::from([("format".to_owned(), "pt".to_owned())]))).unwrap()
}
