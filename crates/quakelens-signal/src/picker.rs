//! The streaming P picker: the trigger of [`crate::trigger`] carried sample by sample, so a
//! station's data passes through the filter and the STA/LTA once, in pieces of any size.
//!
//! A [`Picker`] starts from rest at a grid index and is fed the 3-component stream from there
//! on. Per sample: each component minus its first sample (so the filter starts without a step),
//! missing samples as silence, optionally bandpassed ([`ThreeChannelFilter`]), the modulus, then
//! ObsPy's `recursive_sta_lta` recursion (its first `nlta` values zero) and `trigger_onset`'s
//! on/off rule (`max_len` unset). The recursion starts at the first sample with data; after
//! that, a gap is silence. An onset's peak ratio is the highest STA/LTA value while the
//! trigger stays on, within the `post` samples of its window. Onsets within `post` samples of the
//! onset before them (S phase, coda) are marked merged. Feeding the same samples in any split
//! gives the same picks, bit for bit (tested).

use std::collections::VecDeque;

use crate::filter::{Section, TriggerFilter};
use crate::trigger::TriggerConfig;
use crate::TARGET_RATE_HZ;

/// A bandpass over three components at once, its state carried between calls.
#[derive(Clone, Debug)]
pub struct ThreeChannelFilter {
    sections: Vec<Section>,
    state: Vec<[[f64; 2]; 3]>,
}

impl ThreeChannelFilter {
    pub fn new(sections: Vec<Section>) -> Self {
        let state = vec![[[0.0; 2]; 3]; sections.len()];
        Self { sections, state }
    }

    /// One sample of each component through the cascade. The three recursions are independent,
    /// so the processor overlaps them: the same arithmetic as three single-channel filters.
    #[inline(always)]
    pub fn step(&mut self, mut x: [f64; 3]) -> [f64; 3] {
        for (s, z) in self.sections.iter().zip(self.state.iter_mut()) {
            for ch in 0..3 {
                x[ch] = s.step(&mut z[ch], x[ch]);
            }
        }
        x
    }
}

/// An onset the picker found: grid index, peak STA/LTA ratio, and whether it follows another
/// onset within the window length (then it belongs to that event).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pick {
    pub index: i64,
    pub peak_ratio: f64,
    pub merged: bool,
    /// The peak may still rise: the trigger is on and the window is not over.
    open: bool,
}

/// Streaming trigger state for one station (see the module docs).
#[derive(Clone, Debug)]
pub struct Picker {
    filter: Option<ThreeChannelFilter>,
    offset: [Option<f64>; 3],
    csta: f64,
    clta: f64,
    nlta: u64,
    thres_on: f64,
    thres_off: f64,
    post: i64,
    sta: f64,
    lta: f64,
    /// Samples processed since the start.
    seen: u64,
    /// Grid index of the next sample.
    next: i64,
    /// Index of the onset while the trigger is on.
    on: Option<i64>,
    last_onset: Option<i64>,
    picks: VecDeque<Pick>,
}

impl Picker {
    /// A picker at rest whose first sample is grid index `start`; onsets merge within `post`
    /// samples. The STA/LTA lengths and thresholds come from `cfg` (100 Hz).
    pub fn new(cfg: &TriggerConfig, post: usize, start: i64) -> Self {
        let length = |s: f64| (s * TARGET_RATE_HZ).round().max(1.0);
        let (nsta, nlta) = (length(cfg.sta_s), length(cfg.lta_s));
        Self {
            filter: match &cfg.filter {
                TriggerFilter::None => None,
                TriggerFilter::Bandpass(b) => Some(ThreeChannelFilter::new(b.sections())),
            },
            offset: [None; 3],
            csta: 1.0 / nsta,
            clta: 1.0 / nlta,
            nlta: nlta as u64,
            thres_on: cfg.thres_on,
            thres_off: cfg.thres_off,
            post: post as i64,
            sta: 0.0,
            // As ObsPy: avoids dividing by zero before any energy arrived.
            lta: 1e-99,
            seen: 0,
            next: start,
            on: None,
            last_onset: None,
            picks: VecDeque::new(),
        }
    }

    /// Grid index of the next sample to feed.
    pub fn next_index(&self) -> i64 {
        self.next
    }

    /// Feeds the samples from [`Self::next_index`] on, one slice per component (equal lengths;
    /// NaN marks a missing sample).
    pub fn feed(&mut self, channels: [&[f64]; 3]) {
        let n = channels.iter().map(|c| c.len()).min().unwrap_or(0);
        let (icsta, iclta) = (1.0 - self.csta, 1.0 - self.clta);
        let [a, b, c] = channels;
        for i in 0..n {
            let v = [a[i], b[i], c[i]];
            if self.seen == 0 && v.iter().all(|x| x.is_nan()) {
                // Not started: the recursion begins at the first sample with data.
                self.next += 1;
                continue;
            }
            let mut x = [0.0; 3];
            for ch in 0..3 {
                if !v[ch].is_nan() {
                    x[ch] = v[ch] - *self.offset[ch].get_or_insert(v[ch]);
                }
            }
            if let Some(f) = &mut self.filter {
                x = f.step(x);
            }
            let mut cf = 0.0;
            if self.seen > 0 {
                let sq = x[0] * x[0] + x[1] * x[1] + x[2] * x[2];
                self.sta = self.csta * sq + icsta * self.sta;
                self.lta = self.clta * sq + iclta * self.lta;
                if self.seen >= self.nlta {
                    cf = self.sta / self.lta;
                }
            }
            self.seen += 1;
            self.trigger(self.next, cf);
            self.next += 1;
        }
    }

    /// `trigger_onset`'s rule on one value of the characteristic function.
    fn trigger(&mut self, at: i64, cf: f64) {
        match self.on {
            None if cf >= self.thres_on => {
                let merged = self.last_onset.is_some_and(|p| at < p + self.post);
                self.last_onset = Some(at);
                self.on = Some(at);
                self.picks.push_back(Pick {
                    index: at,
                    peak_ratio: cf,
                    merged,
                    open: self.post > 1,
                });
            }
            None => {}
            Some(_) if cf >= self.thres_off => {
                if let Some(p) = self.picks.back_mut().filter(|p| p.open) {
                    p.peak_ratio = p.peak_ratio.max(cf);
                    p.open = at + 1 < p.index + self.post;
                }
            }
            Some(_) => {
                self.on = None;
                if let Some(p) = self.picks.back_mut() {
                    p.open = false;
                }
            }
        }
    }

    /// Removes and returns the picks before grid index `before` whose peak is final; picks
    /// before `from` are dropped (their chunks are done).
    pub fn take(&mut self, from: i64, before: i64) -> Vec<Pick> {
        let mut out = Vec::new();
        while let Some(p) = self.picks.front() {
            if p.index >= before || p.open {
                break;
            }
            let p = self.picks.pop_front().expect("front exists");
            if p.index >= from {
                out.push(p);
            }
        }
        out
    }

    /// The data ended: peaks are taken over what was fed.
    pub fn finish(&mut self) {
        for p in &mut self.picks {
            p.open = false;
        }
    }
}

/// Every pick of a whole stream starting at grid index `start` (a picker fed once, then
/// finished).
pub fn pick_stream(
    channels: [&[f64]; 3],
    cfg: &TriggerConfig,
    post: usize,
    start: i64,
) -> Vec<Pick> {
    let mut p = Picker::new(cfg, post, start);
    p.feed(channels);
    p.finish();
    p.take(i64::MIN, i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trigger::{recursive_sta_lta, trigger_onset};

    /// Noise with bursts, an offset, and a few missing samples on one component.
    fn channels(n: usize, seed: u64) -> [Vec<f64>; 3] {
        let mut s = seed;
        let mut uniform = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut out: [Vec<f64>; 3] = Default::default();
        for (ch, c) in out.iter_mut().enumerate() {
            *c = (0..n)
                .map(|i| {
                    let loud = [2_000, 3_300, 6_000, 9_500]
                        .iter()
                        .any(|&b| (b..b + 300).contains(&i));
                    20_000.0 + (uniform() - 0.5) * if loud { 60.0 } else { 2.0 } + ch as f64
                })
                .collect();
        }
        for v in out[1].iter_mut().skip(7_000).take(20) {
            *v = f64::NAN;
        }
        out
    }

    #[test]
    fn any_split_gives_the_same_picks() {
        for filter in [TriggerFilter::None, TriggerFilter::default()] {
            let cfg = TriggerConfig {
                filter,
                ..TriggerConfig::default()
            };
            let x = channels(12_000, 0x9e37_79b9_7f4a_7c15);
            let whole = pick_stream([&x[0], &x[1], &x[2]], &cfg, 2000, 500);
            assert!(whole.len() >= 3, "{whole:?}");
            assert!(whole.iter().any(|p| p.merged), "{whole:?}");
            for step in [1, 7, 100, 999, 4_321] {
                let mut p = Picker::new(&cfg, 2000, 500);
                let mut split = Vec::new();
                for start in (0..x[0].len()).step_by(step) {
                    let end = (start + step).min(x[0].len());
                    p.feed([&x[0][start..end], &x[1][start..end], &x[2][start..end]]);
                    split.extend(p.take(i64::MIN, p.next_index()));
                }
                p.finish();
                split.extend(p.take(i64::MIN, i64::MAX));
                assert_eq!(split, whole, "step {step}");
            }
        }
    }

    #[test]
    fn onsets_are_those_of_recursive_sta_lta_and_trigger_onset() {
        for filter in [TriggerFilter::None, TriggerFilter::default()] {
            let cfg = TriggerConfig {
                filter,
                ..TriggerConfig::default()
            };
            let x = channels(12_000, 0x2545_f491_4f6c_dd1d);
            // The reference path: the batch functions (tested against ObsPy) on the same input.
            let prepared: Vec<Vec<f64>> = x
                .iter()
                .map(|c| {
                    let first = c.iter().find(|v| !v.is_nan()).copied().unwrap_or(0.0);
                    let mut y: Vec<f64> = c
                        .iter()
                        .map(|v| if v.is_nan() { 0.0 } else { v - first })
                        .collect();
                    if let Some(b) = filter.bandpass() {
                        b.filter().process(&mut y);
                    }
                    y
                })
                .collect();
            let modulus: Vec<f64> = (0..x[0].len())
                .map(|i| {
                    (0..3)
                        .map(|c| prepared[c][i] * prepared[c][i])
                        .sum::<f64>()
                        .sqrt()
                })
                .collect();
            let cf = recursive_sta_lta(&modulus, 50, 500);
            let reference = trigger_onset(&cf, cfg.thres_on, cfg.thres_off, None, false);
            let picks = pick_stream([&x[0], &x[1], &x[2]], &cfg, 2000, 0);
            assert_eq!(picks.len(), reference.len());
            for (p, &(on, off)) in picks.iter().zip(&reference) {
                assert_eq!(p.index, on as i64);
                let last = off.min(on + 1999).min(cf.len() - 1);
                let peak = cf[on..=last].iter().cloned().fold(f64::MIN, f64::max);
                assert!(
                    (p.peak_ratio - peak).abs() <= 1e-9 * peak,
                    "{} vs {peak}",
                    p.peak_ratio
                );
            }
        }
    }

    #[test]
    fn missing_samples_before_the_data_do_not_start_the_picker() {
        let cfg = TriggerConfig::default();
        let x = channels(12_000, 11);
        let at_start = pick_stream([&x[0], &x[1], &x[2]], &cfg, 2000, 700);
        let late: Vec<Vec<f64>> = x
            .iter()
            .map(|c| {
                std::iter::repeat_n(f64::NAN, 700)
                    .chain(c.iter().copied())
                    .collect()
            })
            .collect();
        let after_nothing = pick_stream([&late[0], &late[1], &late[2]], &cfg, 2000, 0);
        assert!(!at_start.is_empty());
        assert_eq!(after_nothing, at_start);
    }

    #[test]
    fn an_open_pick_waits_for_its_window() {
        let cfg = TriggerConfig::default();
        let x = channels(2_100, 7);
        let mut p = Picker::new(&cfg, 2000, 0);
        p.feed([&x[0][..2_050], &x[1][..2_050], &x[2][..2_050]]);
        // The burst at 2,000 triggered; its peak window is 20 s, not over yet.
        assert!(p.take(i64::MIN, i64::MAX).is_empty());
        p.finish();
        assert_eq!(p.take(i64::MIN, i64::MAX).len(), 1);
    }
}
