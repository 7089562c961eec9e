//! Shape-stable batches: padding a batch to its length bucket and to the full row count changes
//! neither the loss nor the gradients, and warming the run's shapes up changes nothing in the run.

mod common;

use common::*;
use webtune::data::{Batch, DataOptions, Example, bucket_len, load_dataset};
use webtune::model::Model;
use webtune::model::files::Folder;
use webtune::peft::{Adapter, LoraAdapter, LoraConfig, LoraInit};
use webtune::train::{Schedule, TrainConfig, Trainer, loss_sum};

fn model() -> Model {
    Model::load(&Folder::new(fixtures().join("llama").join("base")).unwrap(), &gpu()).unwrap()
}

fn examples(model: &Model) -> Vec<Example> {
    let bytes = std::fs::read(fixtures().join("data").join("train.jsonl")).unwrap();
    let options = DataOptions { max_len: 64, template: None, skip_bad_rows: false };
    load_dataset("train.jsonl", &bytes, &model.tokenizer, &options).unwrap().examples
}

fn lora(model: &Model) -> Adapter {
    lora_of_rank(model, LoraConfig::default().r)
}

fn lora_of_rank(model: &Model, r: usize) -> Adapter {
    let config = LoraConfig {
        target_modules: ["q_proj", "v_proj", "down_proj"].map(String::from).to_vec(),
        init: LoraInit::Gaussian,
        r,
        ..LoraConfig::default()
    };
    Adapter::Lora(block(LoraAdapter::init(&model.lm, config, 3)).unwrap())
}

/// Loss sum and gradients (in `Adapter::params` order) of one batch.
fn loss_and_grads(model: &Model, adapter: &Adapter, batch: &Batch) -> (f32, Vec<Vec<f32>>) {
    let tracked = adapter.tracked();
    let (sum, _) = loss_sum(&model.lm, &tracked, batch).unwrap().unwrap();
    let grads = sum.clone().backward();
    let grads = tracked.params().into_iter().map(|(_, t)| floats(t.grad(&grads).unwrap())).collect();
    (floats(sum.detach().inner())[0], grads)
}

#[test]
fn lengths_are_bucketed_to_few_vector_friendly_sizes() {
    let buckets =
        |run_longest| (1..=run_longest).map(|l| bucket_len(l, run_longest)).collect::<std::collections::BTreeSet<_>>();
    assert_eq!(bucket_len(14, 64), 16);
    assert_eq!(bucket_len(17, 17), 24);
    assert_eq!(bucket_len(65, 512), 80);
    assert_eq!(bucket_len(129, 512), 160);
    assert_eq!(bucket_len(500, 500), 504);
    assert!(buckets(512).iter().all(|l| l % 8 == 0));
    assert_eq!(buckets(512).len(), 24);
    assert_eq!(buckets(17).into_iter().collect::<Vec<_>>(), [8, 16, 24]);
}

#[test]
fn bucketed_and_row_padded_batches_give_the_same_loss_and_gradients() {
    let model = model();
    let train = examples(&model);
    let adapter = lora(&model);
    for start in [0, 3, 9] {
        let rows: Vec<&Example> = train[start..start + 3].iter().collect();
        let exact = Batch::collate(&rows, model.pad_id());
        let len = bucket_len(exact.len, 64);
        assert_eq!(len, 16, "the bucket of {} tokens", exact.len);
        let padded = Batch::collate_padded(&rows, model.pad_id(), 4, len);
        assert_eq!((padded.batch, padded.len), (4, len));

        let (loss, grads) = loss_and_grads(&model, &adapter, &exact);
        let (bucketed_loss, bucketed_grads) = loss_and_grads(&model, &adapter, &padded);
        let loss_error = (loss - bucketed_loss).abs() / loss.abs().max(1.0);
        println!("rows {start}..{}: length {} -> {len}, loss {loss} vs {bucketed_loss}", start + 3, exact.len);
        assert!(loss_error <= 1e-6, "loss {loss} vs bucketed {bucketed_loss}");
        for (i, (g, b)) in grads.iter().zip(&bucketed_grads).enumerate() {
            assert_gradient_close(&format!("rows {start}.. tensor {i}"), b, g);
        }
    }
}

#[test]
fn warming_the_shapes_up_changes_nothing_in_the_run() {
    let model = model();
    let config = TrainConfig {
        lr: 1e-2,
        schedule: Schedule::Constant,
        batch_size: 3,
        max_steps: Some(3),
        shuffle: true,
        ..webtune::options::DEFAULTS.train_config().unwrap()
    };
    let run = |warm: bool| {
        let mut trainer =
            Trainer::new(model.lm.clone(), lora(&model), examples(&model), Vec::new(), config.clone(), model.pad_id())
                .unwrap();
        if warm {
            let shapes = block(trainer.warm_up()).unwrap();
            println!("warmed {shapes} shapes");
            assert!(shapes >= 1);
        }
        (0..3).map(|_| block(trainer.step()).unwrap().loss).collect::<Vec<f64>>()
    };
    assert_eq!(run(true), run(false));
}

/// Steps that replay their passes recorded once (`train::graph`, on a GPU, in a run whose batches
/// all have one shape) train as the passes issued kernel by kernel do: the same losses, gradient
/// norms and adapter over two epochs and a warm-up of the learning rate, also at rank 3 (whose
/// tensors lie at offsets of the flat parameters that burn may view as copies) and with each layer
/// recomputed in the backward pass. A run of several shapes records none.
#[test]
fn recorded_steps_train_as_the_passes_issued_one_by_one() {
    let model = model();
    let config = TrainConfig {
        lr: 1e-2,
        schedule: Schedule::Linear,
        warmup_steps: 2,
        batch_size: 3,
        max_steps: Some(8),
        shuffle: true,
        ..webtune::options::DEFAULTS.train_config().unwrap()
    };
    // 9 to 16 tokens: every batch is padded to 16.
    let one_shape: Vec<Example> =
        examples(&model).into_iter().filter(|e| (9..=16).contains(&e.input_ids.len())).collect();
    assert!(one_shape.len() >= 6, "{} examples of one bucket", one_shape.len());
    let run = |examples: Vec<Example>, r: usize, recompute_layers: bool, recording: bool| {
        let adapter = lora_of_rank(&model, r);
        let config = TrainConfig { recompute_layers, ..config.clone() };
        let mut trainer =
            Trainer::new(model.lm.clone(), adapter, examples, Vec::new(), config, model.pad_id()).unwrap();
        if !recording {
            trainer.set_recording(false);
        }
        let steps: Vec<(f64, f64)> = (0..8)
            .map(|_| {
                let m = block(trainer.step()).unwrap();
                (m.loss, m.grad_norm)
            })
            .collect();
        let params: Vec<Vec<f32>> = trainer.adapter().params().into_iter().map(|(_, t)| floats(t)).collect();
        (steps, params, trainer.recorded_shapes())
    };
    let gpu = !webtune::device::info_of(model.lm.device()).is_cpu();
    for (r, recompute) in [(LoraConfig::default().r, false), (3, false), (LoraConfig::default().r, true)] {
        let (recorded, recorded_params, shapes) = run(one_shape.clone(), r, recompute, true);
        let (issued, issued_params, none) = run(one_shape.clone(), r, recompute, false);
        println!("rank {r}, recompute {recompute}: {shapes} shape recorded; steps: {recorded:?} against {issued:?}");
        assert_eq!(none, 0);
        assert_eq!(shapes, usize::from(gpu));
        for (step, ((loss, norm), (loss_ref, norm_ref))) in recorded.iter().zip(&issued).enumerate() {
            let close = |a: f64, b: f64, tolerance: f64| (a - b).abs() <= tolerance * b.abs().max(1.0);
            assert!(close(*loss, *loss_ref, 1e-5), "rank {r} step {step}: loss {loss} vs {loss_ref}");
            assert!(close(*norm, *norm_ref, 1e-4), "rank {r} step {step}: grad norm {norm} vs {norm_ref}");
        }
        for (i, (p, q)) in recorded_params.iter().zip(&issued_params).enumerate() {
            assert_gradient_close(&format!("rank {r} adapter tensor {i}"), p, q);
        }
    }
    let (_, _, several) = run(examples(&model), LoraConfig::default().r, false, true);
    assert_eq!(several, 0, "a run of several batch shapes records none");
}
