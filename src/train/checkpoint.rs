//! Checkpoints: the adapter, the optimizer moments, the best adapter so far and the loop's
//! counters in one safetensors file. The data order is a function of the step number, so this is
//! all a resumed run needs to continue exactly as an uninterrupted one.

use std::collections::{BTreeMap, HashMap};

use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::err;
use crate::error::Result;
use crate::model::weights::{HostTensor, encode_safetensors, read_host_tensors};
use crate::readback;
use crate::train::{Best, Trainer};

const FORMAT: &str = "webtune-checkpoint-1";

#[derive(Serialize, Deserialize)]
struct State {
    format: String,
    /// Identifies the run: a checkpoint only resumes the same model, adapter and settings.
    run: String,
    step: usize,
    adam_t: usize,
    best_loss: Option<f64>,
    evals_without_improvement: usize,
    stopped_early: bool,
}

impl Trainer {
    /// A description of everything that must match for a checkpoint to resume this run.
    fn run_fingerprint(&self) -> String {
        let keys: Vec<String> = self.adapter.params().into_iter().map(|(k, t)| format!("{k}{:?}", t.dims())).collect();
        format!("{:?}|{}|{}|{:?}", self.config, self.train.len(), self.lm.config.hidden_size, keys)
    }

    /// Serialises the training state (after the last completed step).
    pub async fn checkpoint(&self) -> Result<Vec<u8>> {
        let mut tensors = BTreeMap::new();
        let (m, v) = self.optimizer.moments();
        let groups: [(&str, Vec<Tensor<2>>); 3] =
            [("param", self.adapter.params().into_iter().map(|(_, t)| t).collect()), ("m", m), ("v", v)];
        let best = self.best.as_ref().map(|b| ("best", b.params.clone()));
        for (group, values) in groups.into_iter().chain(best) {
            for (i, t) in values.into_iter().enumerate() {
                let shape = t.dims().to_vec();
                tensors.insert(format!("{group}.{i}"), HostTensor { shape, data: readback::floats(t).await? });
            }
        }
        let state = State {
            format: FORMAT.into(),
            run: self.run_fingerprint(),
            step: self.step,
            adam_t: self.optimizer.t,
            best_loss: self.best.as_ref().map(|b| b.loss),
            evals_without_improvement: self.evals_without_improvement,
            stopped_early: self.stopped_early,
        };
        let metadata: HashMap<String, String> =
            [("webtune".to_owned(), serde_json::to_string(&state).expect("state serialises"))].into();
        Ok(encode_safetensors(&tensors, Some(metadata)))
    }

    /// Restores a checkpoint written by [`Trainer::checkpoint`] for the same run.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| err!(InvalidOptions, "the checkpoint is unreadable (truncated or corrupt): {e}"))?;
        let state: State = metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get("webtune"))
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| err!(InvalidOptions, "this file is not a webtune checkpoint"))?;
        if state.format != FORMAT {
            return Err(err!(
                InvalidOptions,
                "checkpoint format {} is not supported (expected {FORMAT})",
                state.format
            ));
        }
        if state.run != self.run_fingerprint() {
            return Err(err!(
                InvalidOptions,
                "the checkpoint belongs to a different run (model, adapter, data or settings changed)"
            ));
        }
        let mut tensors = read_host_tensors("checkpoint", bytes)?;
        let device = self.lm.device().clone();
        let mut group = |name: &str, count: usize| -> Result<Vec<Tensor<2>>> {
            (0..count)
                .map(|i| {
                    let t = tensors
                        .remove(&format!("{name}.{i}"))
                        .ok_or_else(|| err!(InvalidOptions, "the checkpoint lacks {name}.{i}"))?;
                    let shape: [usize; 2] = t
                        .shape
                        .as_slice()
                        .try_into()
                        .map_err(|_| err!(InvalidOptions, "checkpoint tensor {name}.{i} is not 2-D"))?;
                    Ok(Tensor::from_data(TensorData::new(t.data, shape), &device))
                })
                .collect()
        };
        let n = self.adapter.params().len();
        let params = group("param", n)?;
        let (m, v) = (group("m", n)?, group("v", n)?);
        let best = match state.best_loss {
            Some(loss) => Some(Best { loss, params: group("best", n)? }),
            None => None,
        };
        self.adapter = self.adapter.with_params(params);
        self.optimizer.set_moments(m, v);
        self.optimizer.t = state.adam_t;
        self.step = state.step;
        self.best = best;
        self.evals_without_improvement = state.evals_without_improvement;
        self.stopped_early = state.stopped_early;
        Ok(())
    }
}
