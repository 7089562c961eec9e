//! Adapter folders for the llama fixture, as `peft::read_adapter` reads them: PEFT
//! (`adapter_config.json` + `adapter_model.safetensors`: LoRA, PiSSA, DoRA, IA3, prompt tuning) or
//! AdapterHub (`adapter_config.json` + `adapter.safetensors`: bottleneck adapters). One that reads
//! must write back (`session::export`, in its method's own format) to the same tensors, and a plain
//! LoRA to a GGUF file that the tests' strict reader accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webtune::model::files::MemoryFiles;
use webtune::peft::files::ModelCard;
use webtune::peft::{Adapter, ExportFormat, read_adapter};
use webtune::session;
use webtune_fuzz::gguf_reader::read_gguf;
use webtune_fuzz::{LLAMA, block, folder, memory_files};

fuzz_target!(|data: &[u8]| {
    let lm = &LLAMA.lm;
    let Ok(adapter) = block(read_adapter(&memory_files(&folder(data)), lm)) else { return };
    let write = |format| block(session::export(&LLAMA, &adapter, format, "fuzz", false, &ModelCard::default()));
    let mut written = MemoryFiles::new("written back");
    for (name, bytes) in write(adapter.export_formats()[0]).expect("a read adapter writes back") {
        written.insert(name, bytes);
    }
    let again = block(read_adapter(&written, lm)).expect("a written adapter reads back");
    // Bit patterns: NaN weights must come back as the same NaN.
    let values = |adapter: &Adapter| -> Vec<(String, Vec<u32>)> {
        let floats = |t| block(webtune::readback::floats(t)).expect("the CPU reads back");
        adapter.params().into_iter().map(|(key, t)| (key, floats(t).into_iter().map(f32::to_bits).collect())).collect()
    };
    assert_eq!(values(&adapter), values(&again), "writing then reading changes the adapter");
    if adapter.export_formats().contains(&ExportFormat::Gguf) {
        if let Ok(files) = write(ExportFormat::Gguf) {
            let file = read_gguf(&files[0].1).expect("webtune's GGUF reads back");
            for info in &file.tensors {
                file.tensor_f32(&info.name).expect("every tensor reads back");
            }
        }
    }
});
