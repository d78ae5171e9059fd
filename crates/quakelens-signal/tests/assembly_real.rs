//! Station assembly on real recordings: 200 Hz with gaps and 125 Hz, resampled to 100 Hz.

mod common;

use quakelens_signal::assembly::assemble;
use quakelens_signal::miniseed::{read_file, Trace};
use quakelens_signal::stream::{ChannelId, ChannelOrder};
use quakelens_signal::window::{cut_windows, GapPolicy, WindowMode};

/// The single real channel, copied onto three components of one sensor.
fn three_components(file: &str) -> Vec<Trace> {
    let decoded = read_file(&common::real_data().join(file)).unwrap();
    ["HHN", "HHE", "HHZ"]
        .iter()
        .flat_map(|cha| {
            decoded.traces.iter().map(move |t| Trace {
                id: ChannelId::new(&t.id.network, &t.id.station, &t.id.location, cha),
                ..t.clone()
            })
        })
        .collect()
}

fn nan_runs(x: &[f64]) -> Vec<usize> {
    let mut runs = Vec::new();
    let mut run = 0;
    for v in x {
        if v.is_nan() {
            run += 1;
        } else if run > 0 {
            runs.push(run);
            run = 0;
        }
    }
    runs
}

#[test]
fn gappy_200hz_recording_keeps_its_gaps_at_100hz() {
    let asm = assemble(
        &three_components("BW.BGLD.EHE.gaps.mseed"),
        ChannelOrder::default(),
    );
    assert!(asm.unassembled.is_empty(), "{:?}", asm.unassembled);
    let s = &asm.streams[0];
    assert_eq!(s.key.to_string(), "BW.BGLD..HH");
    assert_eq!(s.source_rate, 200.0);
    assert_eq!(s.stats.resampled_segments, 12);
    assert_eq!(
        s.stats.snapped_segments, 12,
        "every segment starts at an odd 5 ms"
    );
    // Four segments of 412, 824, 824, 50668 samples at 200 Hz → 206 + 412 + 412 + 25334 at 100 Hz.
    for ch in &s.channels {
        assert_eq!(ch.iter().filter(|v| !v.is_nan()).count(), 26_364);
        // The manifest's start times leave gaps of 2.06 s, 2.06 s and 4.12 s between them.
        let runs = nan_runs(ch);
        assert_eq!(runs.len(), 3, "{runs:?}");
        for (run, secs) in runs.iter().zip([2.06, 2.06, 4.12]) {
            assert!((*run as f64 / 100.0 - secs).abs() < 0.011, "{runs:?}");
        }
    }
    // Sliding windows over it: those touching a gap over 0.5 s are dropped, with the reason.
    let cut = cut_windows(
        s,
        &WindowMode::Sliding {
            length_s: 25.0,
            step_s: 5.0,
        },
        GapPolicy::default(),
    );
    assert!(!cut.windows.is_empty() && !cut.dropped.is_empty());
    assert!(cut
        .windows
        .iter()
        .all(|w| w.data.iter().all(|c| c.iter().all(|v| v.is_finite()))));
    assert!(
        cut.dropped.iter().all(|d| d.to_string().contains("gap")),
        "{:?}",
        cut.dropped
    );
}

#[test]
fn recording_at_125hz_is_resampled_to_100hz() {
    let asm = assemble(
        &three_components("1T.MONN.00.EDH.125Hz.mseed"),
        ChannelOrder::default(),
    );
    let s = &asm.streams[0];
    assert_eq!(s.source_rate, 125.0);
    // 7501 samples at 125 Hz = 60.008 s → ceil(7501 · 4/5) = 6001 samples at 100 Hz.
    assert_eq!(s.len(), 6001);
    assert!(s.channels.iter().all(|c| c.iter().all(|v| v.is_finite())));
}
