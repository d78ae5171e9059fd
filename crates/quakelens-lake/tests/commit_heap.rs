//! A commit's heap follows one partition's rows, not the number of partitions it touches: a
//! sink batch of a large network holds one window from each of hundreds of stations, so one
//! commit writes hundreds of `day` × `stream` files.

#[path = "../../quakelens-pipeline/tests/support/heap.rs"]
mod heap;

use quakelens_lake::{LakeFormat, LakeLocation, LakeWriter, WindowRecord};
use quakelens_signal::features::FeatureSet;
use quakelens_signal::spectrogram::SpectrogramInput;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

/// The study's images: 3 × 33 × 153 values a window.
const SHAPE: [usize; 3] = [3, 33, 153];

fn window(station: usize, start_ns: i64) -> WindowRecord {
    let values = SHAPE.iter().product::<usize>();
    // Deterministic noise: values that neither repeat nor compress away, as real images.
    let noise = |i: usize| {
        let x = ((station as u64) << 20 | i as u64).wrapping_mul(6364136223846793005);
        (x >> 40) as f32 / (1u64 << 24) as f32
    };
    WindowRecord {
        window_id: format!("{station:016x}"),
        network: "XB".into(),
        station: format!("S{station:04}"),
        location: "00".into(),
        band: "HH".into(),
        start_ns,
        end_ns: start_ns + 25_000_000_000,
        onset_ns: Some(start_ns + 5_000_000_000),
        mode: "event".into(),
        trigger_ratio: Some(4.0),
        sample_rate: 100.0,
        source_rate: 100.0,
        resampled: false,
        gap_runs: 0,
        filled_samples: 0,
        flat_channels: 0,
        channel_order: "NEZ".into(),
        event_id: None,
        label: None,
        magnitude: None,
        ttf_s: None,
        source: Default::default(),
        catalog: Vec::new(),
        spectrogram: (0..values).map(noise).collect(),
        features: (0..69).map(|i| noise(i + values) as f64).collect(),
        waveform: Vec::new(),
    }
}

/// Peak heap (MiB) above what was held before, while one batch of `stations` windows (one
/// each, so one partition each) is committed to `windows` and `features`.
async fn commit_peak(stations: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let at = LakeLocation::parse(dir.path().to_str().unwrap()).unwrap();
    let format = LakeFormat {
        shape: SHAPE,
        input: SpectrogramInput::default(),
        features: FeatureSet::Study,
        waveform: None,
    };
    let mut w = LakeWriter::open(&at, format).await.unwrap();
    // Creates the tables, so the measured commit is an append like every later one.
    w.write_windows_and_features(&[window(0, 1_717_200_000_000_000_000)], &[])
        .await
        .unwrap();
    let batch: Vec<WindowRecord> = (1..=stations)
        .map(|s| window(s, 1_717_200_000_000_000_000 + s as i64 * 1_000_000_000))
        .collect();
    let input = (stations * SHAPE.iter().product::<usize>() * 4) as f64 / (1 << 20) as f64;
    let before = heap::live_mib();
    heap::reset_peak();
    let started = std::time::Instant::now();
    let c = w.write_windows_and_features(&batch, &[]).await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let peak = heap::peak_mib() - before;
    assert_eq!(c.rows, stations);
    assert_eq!(
        c.files,
        2 * stations,
        "one file per station's partition and table"
    );
    eprintln!(
        "{stations} partitions: commit peak {peak:.1} MiB above the {input:.1} MiB of images held, {seconds:.2} s"
    );
    (peak, input)
}

#[tokio::test]
async fn a_commit_across_hundreds_of_partitions_holds_about_one_partitions_buffers() {
    let (small, small_input) = commit_peak(50).await;
    let (large, large_input) = commit_peak(400).await;
    // The batch itself becomes Arrow columns (one more copy of its images) while it is
    // written; beyond that, 8× the partitions may cost little more than 8× the input.
    let per_partition = (large - small) / 350.0;
    assert!(
        large < 3.0 * large_input + 32.0,
        "a commit of 400 partitions held {large:.1} MiB for {large_input:.1} MiB of images \
         (50 partitions: {small:.1} MiB for {small_input:.1} MiB): {per_partition:.2} MiB a partition"
    );
}
