//! Host-to-device copies made while a training step is issued go through here, counted: a step
//! recorded as a GPU graph (`train::graph`) cannot copy from the host (a recording holds kernel
//! dispatches only), so the trainer records a step only when a trial pass counted no copy.

use std::cell::Cell;

use burn::tensor::{Device, Int, Tensor, TensorData};

thread_local! {
    static COPIES: Cell<u64> = const { Cell::new(0) };
}

/// `values` as an f32 tensor of `shape` on `device`.
pub fn floats<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    note();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// `values` as an integer tensor of `shape` on `device`.
pub fn ints<const D: usize>(values: Vec<i64>, shape: [usize; D], device: &Device) -> Tensor<D, Int> {
    note();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Counts a pass's need for host data that it does not copy itself (see
/// `AttentionContext::with_kernel_inputs`).
pub fn note() {
    COPIES.with(|c| c.set(c.get() + 1));
}

/// Copies made on this thread so far.
pub fn count() -> u64 {
    COPIES.with(Cell::get)
}
