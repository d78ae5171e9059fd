//! Windowing stage: station assembly and window cutting.

use rayon::prelude::*;

use quakelens_signal::assembly::{assemble, AssemblyStats, StationStream};
use quakelens_signal::miniseed::Trace;
use quakelens_signal::window::{cut_windows, DroppedWindow, Window};

use crate::config::PipelineConfig;

/// Windows of all streams and the accounting of everything that did not become a window.
#[derive(Debug, Default)]
pub struct Windowed {
    pub windows: Vec<Window>,
    pub streams: usize,
    pub unassembled: Vec<String>,
    pub dropped: Vec<DroppedWindow>,
    pub merged_onsets: usize,
    pub stats: AssemblyStats,
}

/// Groups traces into station streams and cuts every window the configured mode defines.
pub fn window_traces(traces: &[Trace], cfg: &PipelineConfig) -> Windowed {
    let assembly = assemble(traces, cfg.order);
    let mut out = Windowed {
        streams: assembly.streams.len(),
        unassembled: assembly.unassembled.iter().map(|u| u.to_string()).collect(),
        ..Windowed::default()
    };
    let cuts: Vec<_> = assembly
        .streams
        .par_iter()
        .map(|s: &StationStream| cut_windows(s, &cfg.mode, cfg.gaps))
        .collect();
    for stream in &assembly.streams {
        out.stats += &stream.stats;
    }
    for cut in cuts {
        out.windows.extend(cut.windows);
        out.dropped.extend(cut.dropped);
        out.merged_onsets += cut.merged_onsets;
    }
    out.windows
        .sort_by(|a, b| (&a.station, a.start_ns).cmp(&(&b.station, b.start_ns)));
    out
}
