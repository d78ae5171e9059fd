//! Cutting windows out of station streams: P-aligned (event mode) or on a fixed grid (sliding).
//!
//! Gap policy, applied per window and per channel: a run of missing samples no longer than
//! [`GapPolicy::max_fill_samples`] is filled by linear interpolation between its neighbours
//! (holding the nearest value at a window edge) and counted; a longer run drops the window,
//! with the reason recorded. Nothing is silently lost: every candidate window is either returned
//! or listed in [`CutResult::dropped`].

use serde::{Deserialize, Serialize};

use crate::assembly::StationStream;
use crate::picker::{pick_stream, Pick};
use crate::stream::{ChannelOrder, StationKey};
use crate::trigger::TriggerConfig;
use crate::{TARGET_PERIOD_NS, TARGET_RATE_HZ};

/// Samples before the onset in an event window (5 s at 100 Hz).
pub const PRE_ONSET_SAMPLES: usize = 500;
/// Samples in a model window (25 s at 100 Hz).
pub const WINDOW_SAMPLES: usize = 2500;

/// How windows are chosen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WindowMode {
    /// One window per P onset found by the STA/LTA trigger on the 3-component modulus,
    /// `pre_s` before to `post_s` after it. Onsets within `post_s` of an accepted onset
    /// (S phase, coda re-triggers) belong to the same event and are merged.
    Event {
        trigger: TriggerConfig,
        pre_s: f64,
        post_s: f64,
    },
    /// Windows of `length_s` starting every `step_s`, aligned to multiples of `step_s` since the
    /// epoch so that any split of the same data yields the same windows.
    Sliding { length_s: f64, step_s: f64 },
}

impl Default for WindowMode {
    fn default() -> Self {
        Self::Event {
            trigger: TriggerConfig::default(),
            pre_s: 5.0,
            post_s: 20.0,
        }
    }
}

impl WindowMode {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Event { .. } => "event",
            Self::Sliding { .. } => "sliding",
        }
    }

    /// Samples per window at 100 Hz.
    pub fn window_samples(&self) -> usize {
        let seconds = match self {
            Self::Event { pre_s, post_s, .. } => pre_s + post_s,
            Self::Sliding { length_s, .. } => *length_s,
        };
        (seconds * TARGET_RATE_HZ).round() as usize
    }
}

/// Gap repair limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapPolicy {
    /// Longest run of missing samples (per channel) that is interpolated; longer drops the window.
    pub max_fill_samples: usize,
}

impl Default for GapPolicy {
    fn default() -> Self {
        Self {
            max_fill_samples: 50,
        }
    }
}

/// Stable identifier of a window: 16 hex digits of FNV-1a over station, start time and length,
/// so reprocessing the same data gives the same ids.
pub fn window_id(station: &StationKey, start_ns: i64, samples: usize) -> String {
    let key = format!("{station}|{start_ns}|{samples}");
    format!("{:016x}", fnv1a(key.bytes()))
}

/// 64-bit FNV-1a: a stable (never-changing) hash for ids and file names derived from content.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// One 3-component window at 100 Hz, ready for spectrograms and features.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub id: String,
    pub station: StationKey,
    pub start_ns: i64,
    /// Samples in channel order (`order`), all of equal length.
    pub data: [Vec<f64>; 3],
    pub order: ChannelOrder,
    pub mode: &'static str,
    /// Trigger onset for event windows.
    pub onset_ns: Option<i64>,
    pub trigger_ratio: Option<f64>,
    /// Runs of missing samples that were interpolated (all channels).
    pub gap_runs: u32,
    /// Samples that were interpolated (all channels).
    pub filled_samples: u32,
    pub source_rate: f64,
    pub resampled: bool,
}

impl Window {
    pub fn samples(&self) -> usize {
        self.data[0].len()
    }

    pub fn end_ns(&self) -> i64 {
        self.start_ns + self.samples() as i64 * TARGET_PERIOD_NS
    }
}

/// Why a candidate window was not produced.
#[derive(Clone, Debug, PartialEq)]
pub enum DropReason {
    /// The window would reach past the data (onset too close to an end of the stream).
    OutsideData,
    /// A channel has a gap longer than the policy allows.
    Gap { channel: usize, run: usize },
}

#[derive(Clone, Debug, PartialEq)]
pub struct DroppedWindow {
    pub station: StationKey,
    pub start_ns: i64,
    pub reason: DropReason,
}

impl std::fmt::Display for DroppedWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let when = crate::time::format_ns(self.start_ns);
        match &self.reason {
            DropReason::OutsideData => write!(
                f,
                "{} {when}: window reaches outside the data",
                self.station
            ),
            DropReason::Gap { channel, run } => write!(
                f,
                "{} {when}: channel {channel} has a {run}-sample gap (over the fill limit)",
                self.station
            ),
        }
    }
}

/// Windows cut from one stream, and the candidates that were dropped.
#[derive(Clone, Debug, Default)]
pub struct CutResult {
    pub windows: Vec<Window>,
    pub dropped: Vec<DroppedWindow>,
    /// Trigger onsets merged into an earlier event (S phase, coda).
    pub merged_onsets: usize,
}

/// A candidate window: where it starts on the absolute 100 Hz grid and, for event windows, the
/// onset (grid index) and its peak STA/LTA ratio.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub start: i64,
    pub onset: Option<(i64, f64)>,
}

impl WindowMode {
    /// Samples before and after the onset of an event window.
    pub fn event_extent(&self) -> Option<(i64, i64)> {
        match self {
            Self::Event { pre_s, post_s, .. } => Some((
                (pre_s * TARGET_RATE_HZ).round() as i64,
                (post_s * TARGET_RATE_HZ).round() as i64,
            )),
            Self::Sliding { .. } => None,
        }
    }

    /// Grid step between sliding windows.
    pub fn sliding_step(&self) -> Option<i64> {
        match self {
            Self::Sliding { step_s, .. } => Some(((step_s * TARGET_RATE_HZ).round() as i64).max(1)),
            Self::Event { .. } => None,
        }
    }
}

/// The event windows of `picks` whose onset lies in `core`, and how many onsets there were
/// merged into an earlier event.
pub fn event_candidates(
    picks: &[Pick],
    pre: i64,
    core: std::ops::Range<i64>,
) -> (Vec<Candidate>, usize) {
    let in_core = picks.iter().filter(|p| core.contains(&p.index));
    let merged = in_core.clone().filter(|p| p.merged).count();
    let candidates = in_core
        .filter(|p| !p.merged)
        .map(|p| Candidate {
            start: p.index - pre,
            onset: Some((p.index, p.peak_ratio)),
        })
        .collect();
    (candidates, merged)
}

/// Sliding windows starting in `core` (multiples of `step` since the epoch) that end within
/// `[.., data_end)`.
pub fn sliding_candidates(
    step: i64,
    samples: usize,
    core: std::ops::Range<i64>,
    data_end: i64,
) -> Vec<Candidate> {
    let first = core.start.div_euclid(step) * step;
    let first = if first < core.start {
        first + step
    } else {
        first
    };
    let last = data_end - samples as i64;
    (0..)
        .map(|k| first + k * step)
        .take_while(|&s| s <= last && s < core.end)
        .map(|start| Candidate { start, onset: None })
        .collect()
}

/// Cuts every window `mode` defines from a whole `stream`, applying the gap policy (the
/// picker runs over the stream from its first sample).
pub fn cut_windows(stream: &StationStream, mode: &WindowMode, policy: GapPolicy) -> CutResult {
    let all = stream.first_index..stream.first_index + stream.len() as i64;
    let (candidates, merged_onsets) = match mode {
        WindowMode::Event { trigger, .. } => {
            let (pre, post) = mode.event_extent().unwrap_or_default();
            let [a, b, c] = &stream.channels;
            let picks = pick_stream([a, b, c], trigger, post as usize, stream.first_index);
            event_candidates(&picks, pre, all)
        }
        WindowMode::Sliding { .. } => {
            let step = mode.sliding_step().unwrap_or(1);
            (
                sliding_candidates(step, mode.window_samples(), all.clone(), all.end),
                0,
            )
        }
    };
    let mut cut = cut_at(stream, mode, policy, &candidates);
    cut.merged_onsets = merged_onsets;
    cut
}

/// Cuts the windows at `candidates` from `stream`: each one either becomes a window or is
/// listed as dropped with its reason (outside the stream, or a gap over the fill limit).
pub fn cut_at(
    stream: &StationStream,
    mode: &WindowMode,
    policy: GapPolicy,
    candidates: &[Candidate],
) -> CutResult {
    let n = mode.window_samples();
    let mut result = CutResult::default();
    for cand in candidates {
        let start_ns = cand.start * TARGET_PERIOD_NS;
        let offset = cand.start - stream.first_index;
        if offset < 0 || offset as usize + n > stream.len() {
            result.dropped.push(DroppedWindow {
                station: stream.key.clone(),
                start_ns,
                reason: DropReason::OutsideData,
            });
            continue;
        }
        let range = offset as usize..offset as usize + n;
        let mut data: [Vec<f64>; 3] = Default::default();
        let (mut gap_runs, mut filled) = (0u32, 0u32);
        let mut dropped = None;
        for (ci, channel) in stream.channels.iter().enumerate() {
            let mut samples = channel[range.clone()].to_vec();
            match fill_gaps(&mut samples, policy.max_fill_samples) {
                Ok((runs, count)) => {
                    gap_runs += runs;
                    filled += count;
                }
                Err(run) => {
                    dropped = Some(DropReason::Gap { channel: ci, run });
                    break;
                }
            }
            data[ci] = samples;
        }
        if let Some(reason) = dropped {
            result.dropped.push(DroppedWindow {
                station: stream.key.clone(),
                start_ns,
                reason,
            });
            continue;
        }
        result.windows.push(Window {
            id: window_id(&stream.key, start_ns, n),
            station: stream.key.clone(),
            start_ns,
            data,
            order: stream.order,
            mode: mode.name(),
            onset_ns: cand.onset.map(|(i, _)| i * TARGET_PERIOD_NS),
            trigger_ratio: cand.onset.map(|(_, r)| r),
            gap_runs,
            filled_samples: filled,
            source_rate: stream.source_rate,
            resampled: stream.resampled(),
        });
    }
    result
}

/// Interpolates runs of NaN up to `max_run` long. Returns (runs, samples) filled, or the length
/// of the first run that is too long (or of an all-missing channel).
pub fn fill_gaps(samples: &mut [f64], max_run: usize) -> Result<(u32, u32), usize> {
    let n = samples.len();
    let (mut runs, mut filled) = (0u32, 0u32);
    let mut i = 0;
    while i < n {
        if !samples[i].is_nan() {
            i += 1;
            continue;
        }
        let start = i;
        while i < n && samples[i].is_nan() {
            i += 1;
        }
        let run = i - start;
        if run > max_run || run == n {
            return Err(run);
        }
        let left = if start > 0 {
            Some(samples[start - 1])
        } else {
            None
        };
        let right = if i < n { Some(samples[i]) } else { None };
        for (k, slot) in samples[start..i].iter_mut().enumerate() {
            *slot = match (left, right) {
                (Some(a), Some(b)) => a + (b - a) * (k + 1) as f64 / (run + 1) as f64,
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => 0.0,
            };
        }
        runs += 1;
        filled += run as u32;
    }
    Ok((runs, filled))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assembly::AssemblyStats;
    use crate::filter::TriggerFilter;

    fn stream(len: usize) -> StationStream {
        let noise = |i: usize| ((i * 7919 % 101) as f64 - 50.0) * 0.1;
        let mut channels: [Vec<f64>; 3] = Default::default();
        for ch in channels.iter_mut() {
            *ch = (0..len).map(noise).collect();
        }
        // An "event" at sample 3000 on every channel.
        for ch in channels.iter_mut() {
            for (i, v) in ch.iter_mut().enumerate().skip(3000).take(800) {
                *v += 200.0 * ((i as f64) * 0.9).sin() * (-((i - 3000) as f64) / 300.0).exp();
            }
        }
        StationStream {
            key: StationKey {
                network: "XX".into(),
                station: "STA".into(),
                location: "".into(),
                band: "HH".into(),
            },
            first_index: 1_000_000,
            channels,
            order: ChannelOrder::default(),
            source_rate: 100.0,
            stats: AssemblyStats::default(),
        }
    }

    #[test]
    fn event_window_is_p_aligned_and_stable() {
        let s = stream(8000);
        let cut = cut_windows(&s, &WindowMode::default(), GapPolicy::default());
        assert_eq!(cut.windows.len(), 1, "{:?}", cut.dropped);
        let w = &cut.windows[0];
        let onset = ((w.onset_ns.unwrap() - s.time_ns(0)) / TARGET_PERIOD_NS) as usize;
        assert!((3000..3010).contains(&onset), "onset at {onset}");
        assert_eq!(w.start_ns, w.onset_ns.unwrap() - 500 * TARGET_PERIOD_NS);
        assert_eq!(w.samples(), WINDOW_SAMPLES);
        assert_eq!(w.id, window_id(&s.key, w.start_ns, 2500));
        assert_eq!(w.id.len(), 16);
        let again = cut_windows(&s, &WindowMode::default(), GapPolicy::default());
        assert_eq!(again.windows[0].id, w.id);
    }

    /// A local event (P energy 2–8 Hz) under long-period noise (20–50 s) and microseisms
    /// (3–10 s) far stronger than it, as on a broadband station near a coast: the long-period
    /// energy dominates the unfiltered LTA.
    fn under_microseisms() -> (StationStream, usize) {
        let mut s = stream(12_000);
        let onset = 6_000;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut uniform = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let tau = std::f64::consts::TAU;
        for ch in s.channels.iter_mut() {
            // Long-period noise (20–50 s) and microseisms (3–10 s), each of random phases.
            let micro: Vec<(f64, f64, f64)> = (0..40)
                .map(|k| match k % 2 {
                    0 => (0.02 + 0.03 * uniform(), tau * uniform(), 200.0),
                    _ => (0.1 + 0.2 * uniform(), tau * uniform(), 50.0),
                })
                .collect();
            let p_wave: Vec<(f64, f64)> = (0..8)
                .map(|_| (2.0 + 6.0 * uniform(), tau * uniform()))
                .collect();
            for (i, v) in ch.iter_mut().enumerate() {
                let t = i as f64 / TARGET_RATE_HZ;
                *v = 3.0 * (uniform() - 0.5)
                    + micro
                        .iter()
                        .map(|(f, ph, amplitude)| amplitude * (tau * f * t + ph).sin())
                        .sum::<f64>();
                if i >= onset {
                    let dt = (i - onset) as f64 / TARGET_RATE_HZ;
                    let envelope = (1.0 - (-dt / 0.05).exp()) * (-dt / 2.0).exp();
                    *v += envelope
                        * p_wave
                            .iter()
                            .map(|(f, ph)| 60.0 * (tau * f * dt + ph).sin())
                            .sum::<f64>();
                }
            }
        }
        (s, onset)
    }

    #[test]
    fn the_bandpass_finds_a_local_event_that_microseisms_hide() {
        let (s, onset) = under_microseisms();
        let mode = |filter| WindowMode::Event {
            trigger: TriggerConfig {
                filter,
                ..TriggerConfig::default()
            },
            pre_s: 5.0,
            post_s: 20.0,
        };
        let [a, b, c] = &s.channels;
        // Whether the STA/LTA reaches `ratio` after two LTA lengths (as the windowing warm-up
        // settles it): a picker switched on at that ratio picks there.
        let reaches = |filter: &TriggerFilter, ratio: f64| {
            let cfg = TriggerConfig {
                filter: *filter,
                thres_on: ratio,
                ..TriggerConfig::default()
            };
            crate::picker::pick_stream([a, b, c], &cfg, 2000, 0)
                .iter()
                .any(|p| p.index >= 1000)
        };
        assert!(
            !reaches(&TriggerFilter::None, 2.5) && reaches(&TriggerFilter::default(), 5.0),
            "peak STA/LTA: 2.5 or more unfiltered, or under 5 filtered"
        );

        let missed = cut_windows(&s, &mode(TriggerFilter::None), GapPolicy::default());
        let near_the_event = |w: &&Window| {
            let at = (w.onset_ns.unwrap() - s.time_ns(0)) / TARGET_PERIOD_NS;
            (at - onset as i64).abs() < 500
        };
        assert_eq!(missed.windows.iter().filter(near_the_event).count(), 0);
        let found = cut_windows(&s, &mode(TriggerFilter::default()), GapPolicy::default());
        assert_eq!(found.windows.len(), 1, "{:?}", found.dropped);
        let w = &found.windows[0];
        let picked = ((w.onset_ns.unwrap() - s.time_ns(0)) / TARGET_PERIOD_NS) as usize;
        assert!(
            (onset..onset + 30).contains(&picked),
            "onset {picked}, true {onset}"
        );
        // The window keeps the raw samples, microseisms included.
        let start = picked - PRE_ONSET_SAMPLES;
        assert_eq!(w.data[0][..], s.channels[0][start..start + WINDOW_SAMPLES]);
    }

    #[test]
    fn sliding_windows_align_to_absolute_time() {
        let s = stream(8000);
        let mode = WindowMode::Sliding {
            length_s: 25.0,
            step_s: 10.0,
        };
        let cut = cut_windows(&s, &mode, GapPolicy::default());
        // Stream covers grid [1_000_000, 1_008_000): starts at multiples of 1000 samples.
        let starts: Vec<i64> = cut
            .windows
            .iter()
            .map(|w| w.start_ns / TARGET_PERIOD_NS)
            .collect();
        assert_eq!(
            starts,
            vec![1_000_000, 1_001_000, 1_002_000, 1_003_000, 1_004_000, 1_005_000]
        );
    }

    #[test]
    fn gaps_are_filled_or_drop_the_window() {
        let mut s = stream(8000);
        for v in &mut s.channels[0][3100..3110] {
            *v = f64::NAN;
        }
        let cut = cut_windows(&s, &WindowMode::default(), GapPolicy::default());
        assert_eq!(cut.windows[0].gap_runs, 1);
        assert_eq!(cut.windows[0].filled_samples, 10);
        assert!(cut.windows[0].data[0].iter().all(|v| v.is_finite()));
        for v in &mut s.channels[1][3200..3300] {
            *v = f64::NAN;
        }
        let cut = cut_windows(&s, &WindowMode::default(), GapPolicy::default());
        assert!(cut.windows.is_empty());
        assert_eq!(
            cut.dropped[0].reason,
            DropReason::Gap {
                channel: 1,
                run: 100
            }
        );
        assert!(cut.dropped[0].to_string().contains("100-sample gap"));
    }

    #[test]
    fn onset_near_the_edge_is_reported() {
        let s = stream(3900);
        let cut = cut_windows(&s, &WindowMode::default(), GapPolicy::default());
        assert!(cut.windows.is_empty());
        assert_eq!(cut.dropped.len(), 1);
        assert_eq!(cut.dropped[0].reason, DropReason::OutsideData);
    }

    #[test]
    fn fill_gaps_interpolates() {
        let mut x = [0.0, f64::NAN, f64::NAN, 3.0, f64::NAN];
        assert_eq!(fill_gaps(&mut x, 2), Ok((2, 3)));
        assert_eq!(x, [0.0, 1.0, 2.0, 3.0, 3.0]);
        let mut y = [f64::NAN; 4];
        assert_eq!(fill_gaps(&mut y, 10), Err(4));
    }
}
