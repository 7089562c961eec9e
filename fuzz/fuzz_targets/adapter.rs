//! Adapter folders for the llama fixture, as `peft::read_adapter` reads them: PEFT
//! (`adapter_config.json` + `adapter_model.safetensors`: LoRA, PiSSA, DoRA, IA3, prompt tuning) or
//! AdapterHub (`adapter_config.json` + `adapter.safetensors`: bottleneck adapters). One that reads
//! must write back to the same tensors in its own format, and a plain LoRA to a GGUF file that the
//! tests' strict reader accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webtune::model::files::MemoryFiles;
use webtune::peft::files::{ModelCard, export};
use webtune::peft::{Adapter, ExportFormat, adapterhub, gguf::export_gguf, read_adapter};
use webtune_fuzz::gguf_reader::read_gguf;
use webtune_fuzz::{block, folder, llama, memory_files};

fuzz_target!(|data: &[u8]| {
    let (lm, _) = llama();
    let Ok(adapter) = block(read_adapter(&memory_files(&folder(data)), &lm)) else { return };
    let mut written = MemoryFiles::new("written back");
    if let Adapter::Bottleneck(bottleneck) = &adapter {
        let files = block(adapterhub::export(bottleneck, "fuzz")).expect("a read adapter writes back");
        written.insert(adapterhub::CONFIG_FILE, files.config_json.into_bytes());
        written.insert(adapterhub::WEIGHTS_FILE, files.weights);
    } else {
        let files = block(export(&adapter, "fuzz", false, &ModelCard::default())).expect("a read adapter writes back");
        written.insert(webtune::peft::files::CONFIG_FILE, files.config_json.into_bytes());
        written.insert(webtune::peft::files::WEIGHTS_FILE, files.weights);
    }
    let again = block(read_adapter(&written, &lm)).expect("a written adapter reads back");
    // Bit patterns: NaN weights must come back as the same NaN.
    let values = |adapter: &Adapter| -> Vec<(String, Vec<u32>)> {
        let floats = |t| block(webtune::readback::floats(t)).expect("the CPU reads back");
        adapter.params().into_iter().map(|(key, t)| (key, floats(t).into_iter().map(f32::to_bits).collect())).collect()
    };
    assert_eq!(values(&adapter), values(&again), "writing then reading changes the adapter");
    if adapter.export_formats().contains(&ExportFormat::Gguf) {
        if let Ok(gguf) = block(export_gguf(&adapter, &lm.config)) {
            let file = read_gguf(&gguf).expect("webtune's GGUF reads back");
            for info in &file.tensors {
                file.tensor_f32(&info.name).expect("every tensor reads back");
            }
        }
    }
});
