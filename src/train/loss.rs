//! The loss: the summed token cross-entropy of a batch's supervised positions, and the mean eval
//! loss.

use burn::tensor::{Int, Tensor};

use super::batches::BatchShape;
use crate::data::{Batch, Example, IGNORE_INDEX};
use crate::err;
use crate::error::Result;
use crate::model::CausalLm;
use crate::peft::Adapter;
use crate::readback;

/// Sum of the token cross-entropies over a batch's supervised positions (transformers'
/// `ForCausalLMLoss` before dividing by the token count), and that count. Only supervised
/// positions reach the LM head, and the head's vocabulary is processed in chunks
/// ([`crate::kernels::cross_entropy_sum`]), so no `[tokens, vocab]` tensor exists.
pub fn loss_sum(lm: &CausalLm, adapter: &Adapter, batch: &Batch) -> Result<Option<(Tensor<1>, usize)>> {
    let Some(supervised) = Supervised::of(lm, adapter, batch)? else { return Ok(None) };
    let hidden = adapter.hidden(lm, &batch.input_ids, batch.batch, Some(&batch.attention_mask), None)?;
    Ok(Some((supervised.loss_sum(lm, hidden), supervised.targets.len())))
}

/// The positions of a batch whose next token is supervised, and those tokens.
pub struct Supervised {
    /// Row indices into the `[batch·(prefix+len), hidden]` hidden states.
    rows: Tensor<1, Int>,
    targets: Vec<u32>,
}

impl Supervised {
    /// `None` when nothing in the batch is supervised.
    pub fn of(lm: &CausalLm, adapter: &Adapter, batch: &Batch) -> Result<Option<Self>> {
        let prefix = adapter.prefix_len();
        let (b, len) = (batch.batch, batch.len);
        let width = prefix + len;
        // Labels of the full sequence (the virtual tokens get -100), shifted by one.
        let label =
            |row: usize, pos: usize| if pos < prefix { IGNORE_INDEX } else { batch.labels[row * len + pos - prefix] };
        let mut rows = Vec::new();
        let mut targets = Vec::new();
        for row in 0..b {
            for pos in 0..width - 1 {
                let target = label(row, pos + 1);
                if target != IGNORE_INDEX {
                    rows.push((row * width + pos) as i64);
                    targets.push(target);
                }
            }
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let vocab = lm.config.vocab_size as i64;
        if let Some(bad) = targets.iter().find(|&&t| t < 0 || t >= vocab) {
            return Err(err!(InvalidDataset, "label {bad} is outside the vocabulary of {vocab}"));
        }
        let count = rows.len();
        let rows = crate::upload::ints(rows, [count], lm.device());
        Ok(Some(Supervised { rows, targets: targets.into_iter().map(|t| t as u32).collect() }))
    }

    /// The summed cross-entropy of the supervised rows of final hidden states.
    pub fn loss_sum(&self, lm: &CausalLm, hidden: Tensor<2>) -> Tensor<1> {
        lm.cross_entropy_sum(hidden.select(0, self.rows.clone()), &self.targets)
    }
}

/// Mean token loss of `adapter` on `examples` (eval batches of `batch_size` in order).
pub async fn evaluate(
    lm: &CausalLm,
    adapter: &Adapter,
    examples: &[Example],
    batch_size: usize,
    pad_id: u32,
) -> Result<f64> {
    let mut adapter = adapter.clone();
    adapter.set_training(None);
    let mut total: Option<Tensor<1>> = None;
    let mut count = 0;
    let shape = BatchShape::of(examples, batch_size);
    for chunk in examples.chunks(batch_size.max(1)) {
        let refs: Vec<&Example> = chunk.iter().collect();
        if let Some((sum, n)) = loss_sum(lm, &adapter, &shape.collate(&refs, pad_id))? {
            total = Some(total.map_or(sum.clone(), |t| t + sum));
            count += n;
        }
    }
    let total = total.ok_or_else(|| err!(InvalidDataset, "the eval set has no supervised tokens"))?;
    Ok(readback::scalar(total).await? as f64 / count as f64)
}

/// Supervised labels that some position predicts (what the loss averages over): all but each
/// row's first, which only a prompt-tuning prefix can predict.
pub(super) fn supervised_predictions(batch: &Batch, prefix: usize) -> usize {
    let skip = usize::from(prefix == 0);
    (0..batch.batch)
        .map(|row| {
            batch.labels[row * batch.len + skip..(row + 1) * batch.len].iter().filter(|&&l| l != IGNORE_INDEX).count()
        })
        .sum()
}
