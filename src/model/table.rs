//! Vocabulary-sized frozen matrices (token embeddings, LM heads, learned positions) stored as row
//! blocks. A GPU binds at most `maxStorageBufferBindingSize` bytes per buffer (128 MiB to 1 GiB on
//! many devices), less than Llama-3.2's 128,256 × 2,048 f32 embedding; each block fits one binding
//! even when cast to f32 for use. A lookup reads the blocks holding the ids; a projection is the
//! concatenation of per-block products; the loss needs only each row's log-sum-exp (combined from
//! the blocks') and its target's logit.

use burn::tensor::{Int, Tensor};

use crate::kernels::{frozen_matmul, log_sum_exp_in_chunks};
use crate::model::layers::to_f32;

/// A frozen `[rows, cols]` matrix as consecutive row blocks of `block_rows` rows (the last may be
/// shorter), at the model's storage width.
#[derive(Clone)]
pub struct Table {
    blocks: Vec<Tensor<2>>,
    block_rows: usize,
    rows: usize,
    cols: usize,
}

impl Table {
    /// Blocks of `block_rows` rows each (the last may be shorter), in row order.
    pub fn from_blocks(blocks: Vec<Tensor<2>>, block_rows: usize) -> Self {
        let cols = blocks[0].dims()[1];
        let rows = blocks.iter().map(|b| b.dims()[0]).sum();
        Table { blocks, block_rows, rows, cols }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of row blocks (1 when the matrix fits one binding).
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// The whole matrix at its stored width when it is one block (fits one binding), else `None`.
    pub fn single_block(&self) -> Option<Tensor<2>> {
        match self.blocks.as_slice() {
            [block] => Some(block.clone()),
            _ => None,
        }
    }

    /// Rows `ids` (each `< rows`) as f32 `[ids.len(), cols]`, in the order given.
    pub fn lookup(&self, ids: &[u32]) -> Tensor<2> {
        let device = self.blocks[0].device();
        let index = |ids: Vec<i64>| {
            let n = ids.len();
            crate::upload::ints(ids, [n], &device)
        };
        if let Some(rows) = self.lookup_on_device(index(ids.iter().map(|&id| id as i64).collect())) {
            return rows;
        }
        // Gather per block, then put the rows back in the order asked for.
        let mut parts = Vec::new();
        let mut order = vec![0i64; ids.len()];
        let mut placed = 0;
        for (b, block) in self.blocks.iter().enumerate() {
            let first = b * self.block_rows;
            let local: Vec<(usize, i64)> = ids
                .iter()
                .enumerate()
                .filter(|&(_, &id)| (id as usize) / self.block_rows == b)
                .map(|(i, &id)| (i, (id as usize - first) as i64))
                .collect();
            if local.is_empty() {
                continue;
            }
            for (k, &(i, _)) in local.iter().enumerate() {
                order[i] = (placed + k) as i64;
            }
            placed += local.len();
            parts.push(block.clone().select(0, index(local.into_iter().map(|(_, row)| row).collect())));
        }
        to_f32(Tensor::cat(parts, 0)).select(0, index(order))
    }

    /// [`Table::lookup`] of `ids [n]` already on the device: `None` when the matrix is split into
    /// blocks (the host sorts the ids by block).
    pub fn lookup_on_device(&self, ids: Tensor<1, Int>) -> Option<Tensor<2>> {
        let [block] = self.blocks.as_slice() else { return None };
        Some(to_f32(block.clone().select(0, ids)))
    }

    /// `h · Wᵀ` for `h [n, cols]`: `[n, rows]` in f32 (an LM head's logits).
    pub fn project(&self, h: Tensor<2>) -> Tensor<2> {
        let parts: Vec<Tensor<2>> =
            self.blocks.iter().map(|block| frozen_matmul(h.clone(), block.clone(), true)).collect();
        if parts.len() == 1 { parts.into_iter().next().expect("one block") } else { Tensor::cat(parts, 1) }
    }

    /// `log softmax(h · Wᵀ)[target]` per row of `h [n, cols]`, mathematically
    /// `log_softmax(project(h)).gather(targets)`, without an `[n, rows]` tensor: each block's
    /// log-sum-exp in vocabulary chunks of `chunk` ids (`kernels::log_sum_exp_in_chunks`, the
    /// logits kept for the backward pass when `keep_logits`), combined into the row's, subtracted
    /// from the target's logit `h · W[target]`.
    pub fn target_log_probs(&self, h: Tensor<2>, targets: &[u32], chunk: usize, keep_logits: bool) -> Tensor<1> {
        let n = targets.len();
        let per_block: Vec<Tensor<2>> = self
            .blocks
            .iter()
            .map(|block| log_sum_exp_in_chunks(h.clone(), block.clone(), chunk, keep_logits).reshape([n, 1]))
            .collect();
        let lse = log_sum_exp(Tensor::cat(per_block, 1));
        let target_logits = (h * self.lookup(targets)).sum_dim(1);
        (target_logits - lse).reshape([n])
    }
}

/// `log Σ_j exp(x[i, j])` per row of `x [n, m]` as `[n, 1]`, shifted by the row maximum (a
/// constant for the gradient, as in `torch.logsumexp`).
fn log_sum_exp(x: Tensor<2>) -> Tensor<2> {
    let max = x.clone().max_dim(1).detach();
    (x - max.clone()).exp().sum_dim(1).log() + max
}
