//! GGUF files through the tests' strict reader (`tests/common/gguf_reader.rs`), which checks what
//! webtune writes; the writer's own output for fuzzed adapters is read back in the adapter target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webtune_fuzz::gguf_reader::read_gguf;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = read_gguf(data) {
        for info in &file.tensors {
            let _ = file.tensor_f32(&info.name);
        }
    }
});
