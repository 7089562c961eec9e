//! Checkpoints restored into a LoRA run on the llama fixture; a run that accepts one must be able
//! to train on from it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webtune_fuzz::{block, checkpoint_run};

fuzz_target!(|data: &[u8]| {
    let mut run = checkpoint_run();
    if run.restore(data).is_ok() && !run.is_done() {
        let _ = block(run.step());
    }
});
