//! One `waveforms.raw` message as the windower reads it: split into records, each decoded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quakelens_signal::miniseed::{decode_record_logged, split_records, Frame};

fuzz_target!(|data: &[u8]| {
    for frame in split_records(data) {
        if let Frame::Record { offset, len } = frame {
            let _ = decode_record_logged(&data[offset..offset + len]);
        }
    }
});
