//! A whole file as the embedded run reads it: split into records, decoded, joined into traces.
//! (Assembly onto the 100 Hz grid runs on chunk spans in the pipeline, never on a whole file.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use quakelens_signal::miniseed::decode_bytes;

fuzz_target!(|data: &[u8]| {
    let _ = decode_bytes(data, "fuzz");
});
