//! Which examples each optimizer step uses and the padded shape they are collated to.

use crate::data::{Batch, Example, bucket_len};
use crate::rng::{Rng, Stream};

/// The padded shape of a run's batches: always `rows` rows, lengths bucketed by [`bucket_len`]
/// up to the run's longest example, so the GPU meets only a few tensor shapes.
#[derive(Clone, Copy, Debug)]
pub(super) struct BatchShape {
    pub(super) rows: usize,
    longest: usize,
}

impl BatchShape {
    pub(super) fn of(examples: &[Example], batch_size: usize) -> Self {
        BatchShape { rows: batch_size.max(1), longest: examples.iter().map(|e| e.input_ids.len()).max().unwrap_or(0) }
    }

    pub(super) fn len_of(&self, examples: &[&Example]) -> usize {
        bucket_len(examples.iter().map(|e| e.input_ids.len()).max().unwrap_or(0), self.longest)
    }

    pub(super) fn collate(&self, examples: &[&Example], pad_id: u32) -> Batch {
        Batch::collate_padded(examples, pad_id, self.rows, self.len_of(examples))
    }
}

/// Which examples each optimizer step uses: derived from the step number alone, so a resumed
/// run sees exactly the batches an uninterrupted one would.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    pub(super) examples: usize,
    pub(super) batch_size: usize,
    pub(super) grad_accum: usize,
    pub(super) shuffle: bool,
    pub(super) seed: u64,
}

impl Plan {
    fn batches_per_epoch(&self) -> usize {
        self.examples.div_ceil(self.batch_size)
    }

    pub(super) fn steps_per_epoch(&self) -> usize {
        self.batches_per_epoch().div_ceil(self.grad_accum)
    }

    fn order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.examples).collect();
        if self.shuffle {
            Rng::stream(self.seed, Stream::EpochOrder { epoch }).shuffle(&mut order);
        }
        order
    }

    /// The micro-batches (example indices) of optimizer step `step` (0-based).
    pub(super) fn step(&self, step: usize) -> Vec<Vec<usize>> {
        let per_epoch = self.steps_per_epoch();
        let (epoch, within) = (step / per_epoch, step % per_epoch);
        let order = self.order(epoch);
        let first = within * self.grad_accum;
        let last = ((within + 1) * self.grad_accum).min(self.batches_per_epoch());
        (first..last)
            .map(|b| order[b * self.batch_size..((b + 1) * self.batch_size).min(self.examples)].to_vec())
            .collect()
    }
}
