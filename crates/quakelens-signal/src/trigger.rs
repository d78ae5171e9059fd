//! P-onset detection: ObsPy's `recursive_sta_lta` and `trigger_onset`, same semantics.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::filter::TriggerFilter;

/// Recursive STA/LTA characteristic function (Withers et al. 1998), as
/// `obspy.signal.trigger.recursive_sta_lta`: the first `nlta` values are forced to zero.
pub fn recursive_sta_lta(a: &[f64], nsta: usize, nlta: usize) -> Vec<f64> {
    let n = a.len();
    let mut charfct = vec![0.0; n];
    if nsta == 0 || nlta == 0 {
        return charfct;
    }
    let csta = 1.0 / nsta as f64;
    let clta = 1.0 / nlta as f64;
    let (icsta, iclta) = (1.0 - csta, 1.0 - clta);
    let mut sta = 0.0;
    let mut lta = 1e-99; // avoids dividing by zero before any energy arrived
    for i in 1..n {
        let sq = a[i] * a[i];
        sta = csta * sq + icsta * sta;
        lta = clta * sq + iclta * lta;
        charfct[i] = sta / lta;
    }
    for v in charfct.iter_mut().take(nlta.min(n)) {
        *v = 0.0;
    }
    charfct
}

/// Trigger on/off sample pairs, as `obspy.signal.trigger.trigger_onset`: on where the function
/// reaches `thres_on`, off where it last stays at or above `thres_off`. `max_len` caps an event's
/// length in samples; with `max_len_delete` over-long events are dropped instead of cut.
pub fn trigger_onset(
    charfct: &[f64],
    thres_on: f64,
    thres_off: f64,
    max_len: Option<usize>,
    max_len_delete: bool,
) -> Vec<(usize, usize)> {
    const FAR: i64 = i64::MAX / 4;
    let ind1: Vec<i64> = indices_at_or_above(charfct, thres_on);
    if ind1.is_empty() {
        return Vec::new();
    }
    let ind2: Vec<i64> = indices_at_or_above(charfct, thres_off);
    let mut on: VecDeque<i64> = VecDeque::from([ind1[0]]);
    let mut of: VecDeque<i64> = VecDeque::from([-1]);
    // Off times: the last index of every run above the off threshold.
    for (j, &i) in ind2.iter().enumerate() {
        if j + 1 == ind2.len() || ind2[j + 1] - i > 1 {
            of.push_back(i);
        }
    }
    // On times: the first index of every later run above the on threshold.
    for w in ind1.windows(2) {
        if w[1] - w[0] > 1 {
            on.push_back(w[1]);
        }
    }
    if max_len_delete {
        of.push_back(FAR);
        let last = *on.back().unwrap_or(&0);
        on.push_back(last);
    } else if let Some(&last) = ind2.last() {
        of.push_back(last);
    }
    of.push_back(charfct.len() as i64);
    let max_len = max_len.map_or(FAR, |m| m as i64);

    let mut picks = Vec::new();
    while let (Some(&on_last), Some(&of_first)) = (on.back(), of.front()) {
        if on_last <= of_first {
            break;
        }
        while matches!((on.front(), of.front()), (Some(a), Some(b)) if a <= b) {
            on.pop_front();
        }
        while matches!((of.front(), on.front()), (Some(b), Some(a)) if b < a) {
            of.pop_front();
        }
        let (Some(&a), Some(&b)) = (on.front(), of.front()) else {
            break;
        };
        if b - a > max_len {
            if max_len_delete {
                on.pop_front();
                continue;
            }
            of.push_front(a + max_len);
        }
        let b = *of.front().unwrap_or(&b);
        picks.push((a as usize, b.min(charfct.len() as i64) as usize));
    }
    picks
}

fn indices_at_or_above(values: &[f64], threshold: f64) -> Vec<i64> {
    values
        .iter()
        .enumerate()
        .filter(|(_, &v)| v >= threshold)
        .map(|(i, _)| i as i64)
        .collect()
}

/// Event-mode trigger settings; defaults suit local events at 100 Hz.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerConfig {
    /// Short-term average length (s).
    pub sta_s: f64,
    /// Long-term average length (s).
    pub lta_s: f64,
    /// STA/LTA ratio that switches the trigger on.
    pub thres_on: f64,
    /// Ratio below which it switches off.
    pub thres_off: f64,
    /// Bandpass applied to each component before the modulus (the windows keep the raw samples).
    #[serde(default)]
    pub filter: TriggerFilter,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        Self {
            sta_s: 0.5,
            lta_s: 5.0,
            thres_on: 3.0,
            thres_off: 1.0,
            filter: TriggerFilter::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalta_rises_on_a_burst() {
        let mut x = vec![0.0; 3000];
        for (i, v) in x.iter_mut().enumerate() {
            *v = ((i * 7919) % 13) as f64 - 6.0; // low "noise"
        }
        for v in x.iter_mut().skip(2000).take(300) {
            *v *= 20.0;
        }
        let cf = recursive_sta_lta(&x, 50, 500);
        assert!(cf[..500].iter().all(|&v| v == 0.0));
        let picks = trigger_onset(&cf, 3.0, 1.0, None, false);
        assert_eq!(picks.len(), 1, "{picks:?}");
        assert!((2000..2020).contains(&picks[0].0), "{picks:?}");
    }

    #[test]
    fn trigger_onset_handles_edge_cases() {
        assert!(trigger_onset(&[0.0, 1.0, 0.5], 2.0, 1.0, None, false).is_empty());
        // Stays on to the end: switched off at the last sample.
        let cf = [0.0, 0.0, 5.0, 5.0, 5.0];
        assert_eq!(trigger_onset(&cf, 3.0, 1.0, None, false), vec![(2, 4)]);
        // max_len cuts, and deletes with max_len_delete.
        let cf = [0.0, 5.0, 5.0, 5.0, 5.0, 5.0, 0.0, 0.0];
        assert_eq!(trigger_onset(&cf, 3.0, 1.0, Some(2), false), vec![(1, 3)]);
        assert!(trigger_onset(&cf, 3.0, 1.0, Some(2), true).is_empty());
    }
}
