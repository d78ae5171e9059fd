//! One message as a service takes it from the broker, through every decoder the services run
//! (windows, scores, magnitudes, forest and CNN SHAP tasks and results).
#![no_main]

use libfuzzer_sys::fuzz_target;
use quakelens_records::messages::decode_with_every_decoder;

static QUIET: std::sync::Once = std::sync::Once::new();

fuzz_target!(|data: &[u8]| {
    // The decoders turn a panic inside the Arrow reader into the message's error; libFuzzer's
    // hook would abort at the panic, before it is caught. A panic that escapes the decoders
    // still aborts: libfuzzer-sys catches it around this closure.
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let _ = decode_with_every_decoder(data);
});
