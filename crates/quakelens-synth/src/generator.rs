//! The stochastic event model. Units: samples are digitizer counts at 100 Hz.

use realfft::RealFftPlanner;

use quakelens_signal::stream::StationKey;
use quakelens_signal::{TARGET_PERIOD_NS, TARGET_RATE_HZ};

use crate::catalog::{CatalogEvent, EventClass};
use crate::rng::Rng;

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthConfig {
    pub seed: u64,
    pub events: usize,
    /// Events are spread round-robin over this many stations.
    pub stations: usize,
    /// Each event gets its own slot of this many seconds in its station's continuous stream;
    /// two minutes lets the STA/LTA trigger's long-term average forget a large event before the
    /// next one arrives.
    pub slot_s: f64,
    /// Time of the first sample of every station, ns since the epoch.
    pub start_ns: i64,
    /// Background noise standard deviation (counts).
    pub noise_counts: f64,
    /// A sequence around a mainshock instead of independent events: every event before
    /// [`SynthConfig::mainshock_ns`] is a foreshock, every one after an aftershock, and the
    /// source drifts with time to failure (see [`sequence_source`]).
    pub sequence: bool,
    /// With `sequence`: an intermediate sequence inside the foreshock side (the paper's Visso
    /// sequence between Amatrice and Norcia), [`MIDDLE`] of its slots, whose events have a source
    /// of their own (see [`middle_source`]); its span is [`SynthConfig::middle_span_ns`].
    pub middle: bool,
}

/// Where the intermediate sequence sits in the foreshock side's slots (fractions).
pub const MIDDLE: (f64, f64) = (0.55, 0.75);

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            events: 100,
            stations: 4,
            slot_s: 120.0,
            start_ns: 1_709_251_200_000_000_000, // 2024-03-01T00:00:00Z
            noise_counts: 20.0,
            sequence: false,
            middle: false,
        }
    }
}

impl SynthConfig {
    fn slots(&self) -> usize {
        self.events.div_ceil(self.stations.max(1)).max(1)
    }

    /// The mainshock of a sequence: the start of the middle slot, so half the events come
    /// before it (`None` for independent events).
    pub fn mainshock_ns(&self) -> Option<i64> {
        self.sequence.then(|| self.slot_start_ns(self.slots() / 2))
    }

    fn slot_start_ns(&self, k: usize) -> i64 {
        self.start_ns + (k as f64 * self.slot_s * 1e9) as i64
    }

    /// The slots `[first, end)` of the intermediate sequence (empty without one).
    fn middle_slots(&self) -> std::ops::Range<usize> {
        if !(self.sequence && self.middle) {
            return 0..0;
        }
        let half = self.slots() / 2;
        let at = |f: f64| (f * half as f64).round() as usize;
        at(MIDDLE.0)..at(MIDDLE.1).max(at(MIDDLE.0) + 1).min(half)
    }

    /// The intermediate sequence's time span `[start, end)` (ns), what `--middle` takes.
    pub fn middle_span_ns(&self) -> Option<(i64, i64)> {
        let slots = self.middle_slots();
        (!slots.is_empty()).then(|| {
            (
                self.slot_start_ns(slots.start),
                self.slot_start_ns(slots.end),
            )
        })
    }
}

/// Stress drop (bar) and κ (s) of a sequence's event, given its side and how far along that
/// side it is (`u`: 0 = the sequence's start or just after the mainshock, 1 = just before the
/// mainshock or the sequence's end), log-linear between the ends. Toward the mainshock stress
/// drop falls and κ rises; right after it both are at their extremes and they recover. Early
/// and late events of a side, and the two sides' late ends, differ only by degrees (with the
/// per-event scatter on top), above the corner frequencies (≳ 5 Hz): what a low-pass removes.
pub fn sequence_source(class: EventClass, u: f64) -> (f64, f64) {
    let u = u.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a.ln() + (b.ln() - a.ln()) * u).exp();
    match class {
        EventClass::Foreshock => (lerp(100.0, 20.0), lerp(0.012, 0.03)),
        EventClass::Aftershock => (lerp(8.0, 40.0), lerp(0.04, 0.02)),
    }
}

/// Stress drop (bar) and κ (s) of an event of the intermediate sequence, `u` of the way through
/// it: the aftershocks of an earlier, smaller mainshock, so stress drop starts low and recovers
/// (10 → 30 bar) like the post side's, but on a path with little attenuation (κ 0.006 → 0.01 s,
/// below every other event's): a combination no other class has, told apart only above the
/// corner frequencies, like the others.
pub fn middle_source(u: f64) -> (f64, f64) {
    let u = u.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a.ln() + (b.ln() - a.ln()) * u).exp();
    (lerp(10.0, 30.0), lerp(0.006, 0.01))
}

/// One station's continuous 3-component recording, channels in N, E, Z order.
#[derive(Clone, Debug, PartialEq)]
pub struct StationRecording {
    pub key: StationKey,
    pub start_ns: i64,
    pub channels: [Vec<i32>; 3],
}

/// Recordings plus the catalogue that labels them.
#[derive(Clone, Debug, PartialEq)]
pub struct Synthetic {
    pub stations: Vec<StationRecording>,
    pub catalog: Vec<CatalogEvent>,
}

/// Source and path of one event at one station.
struct EventModel {
    magnitude: f64,
    class: EventClass,
    distance_km: f64,
    corner_hz: f64,
    kappa_s: f64,
    back_azimuth: f64,
}

const VP_KM_S: f64 = 6.0;
const VS_KM_S: f64 = 3.46;
const Q: f64 = 300.0;

impl EventModel {
    /// An independent event (`sequence` `None`), or one of a sequence with its class and
    /// source (see [`sequence_source`], [`middle_source`]).
    fn draw(rng: &mut Rng, sequence: Option<(EventClass, (f64, f64))>) -> Self {
        let magnitude = rng.range(1.5, 4.0);
        let (class, (stress_bar, kappa_s)) = match sequence {
            Some((class, source)) => (class, source),
            None if rng.uniform() < 0.5 => (EventClass::Foreshock, (100.0, 0.015)),
            None => (EventClass::Aftershock, (10.0, 0.035)),
        };
        // Brune corner frequency: fc = 4.9e6 · β · (Δσ / M0)^(1/3), β km/s, Δσ bar, M0 dyn·cm.
        let stress = stress_bar * (0.3 * rng.normal()).exp();
        let m0 = 10f64.powf(1.5 * magnitude + 16.1);
        let corner_hz = 4.9e6 * 3.5 * (stress / m0).cbrt();
        Self {
            magnitude,
            class,
            distance_km: rng.range(10.0, 40.0),
            corner_hz,
            kappa_s,
            back_azimuth: rng.range(0.0, 2.0 * std::f64::consts::PI),
        }
    }
}

/// A phase arrival: enveloped Gaussian noise shaped by the Brune velocity spectrum and path attenuation,
/// scaled to `peak` counts.
fn phase(
    rng: &mut Rng,
    ev: &EventModel,
    travel_s: f64,
    corner_hz: f64,
    decay_s: f64,
    peak: f64,
) -> Vec<f64> {
    // Long enough for the envelope to fall ~12 e-folds: no step where the wavelet ends.
    let n = ((12.0 * decay_s + 4.0) * TARGET_RATE_HZ) as usize;
    let rise_s = 0.05 + 0.3 / corner_hz;
    let mut x: Vec<f64> = (0..n)
        .map(|i| {
            let t = i as f64 / TARGET_RATE_HZ;
            let env = if t < rise_s {
                t / rise_s
            } else {
                (-(t - rise_s) / decay_s).exp()
            };
            rng.normal() * env
        })
        .collect();
    let mut planner = RealFftPlanner::<f64>::new();
    // Zero padding keeps the (zero-phase, hence two-sided) filter from wrapping the wavelet's
    // onset around to its end; the padded tail is dropped after filtering.
    let pad = (4.0 * TARGET_RATE_HZ) as usize;
    x.resize(n + pad, 0.0);
    let forward = planner.plan_fft_forward(n + pad);
    let inverse = planner.plan_fft_inverse(n + pad);
    let mut spectrum = forward.make_output_vec();
    // Lengths always match the plans, so these cannot fail.
    let _ = forward.process(&mut x, &mut spectrum);
    for (k, c) in spectrum.iter_mut().enumerate() {
        let f = k as f64 * TARGET_RATE_HZ / (n + pad) as f64;
        let shape = if k == 0 {
            0.0
        } else {
            // Ground velocity (what a seismometer records): f · ω² source, so no long-period
            // drift; then anelastic path and near-site (κ) attenuation.
            let path = (-std::f64::consts::PI * f * (ev.kappa_s + travel_s / Q)).exp();
            f * path / (1.0 + (f / corner_hz).powi(2))
        };
        *c *= shape;
    }
    if let Some(last) = spectrum.last_mut() {
        last.im = 0.0;
    }
    spectrum[0].im = 0.0;
    let mut wave = inverse.make_output_vec();
    let _ = inverse.process(&mut spectrum, &mut wave);
    wave.truncate(n);
    let max = wave.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if max > 0.0 {
        for v in &mut wave {
            *v *= peak / max;
        }
    }
    wave
}

fn add_at(channel: &mut [f64], start: usize, wave: &[f64], gain: f64) {
    for (slot, v) in channel.iter_mut().skip(start).zip(wave) {
        *slot += gain * v;
    }
}

/// Generates `cfg.events` labelled events on `cfg.stations` continuous station streams.
pub fn generate(cfg: &SynthConfig) -> Synthetic {
    let stations = cfg.stations.max(1);
    let per_station = cfg.slots();
    let half = per_station / 2;
    let middle = cfg.middle_slots();
    let slot = (cfg.slot_s * TARGET_RATE_HZ) as usize;
    let len = per_station.max(1) * slot;
    let mut root = Rng::new(cfg.seed);
    let mut recordings: Vec<(StationKey, [Vec<f64>; 3])> = (0..stations)
        .map(|s| {
            let key = StationKey {
                network: "XX".into(),
                // miniSEED 2 station codes have at most 5 characters.
                station: if s < 100 {
                    format!("SYN{s:02}")
                } else {
                    format!("S{s:04}")
                },
                location: "00".into(),
                band: "HH".into(),
            };
            let mut rng = root.fork(s as u64);
            let channels = std::array::from_fn(|_| {
                let offset = rng.range(-200.0, 200.0);
                let mut ar = 0.0;
                (0..len)
                    .map(|_| {
                        ar = 0.6 * ar + cfg.noise_counts * 0.8 * rng.normal();
                        offset + ar
                    })
                    .collect()
            });
            (key, channels)
        })
        .collect();
    let mut catalog = Vec::with_capacity(cfg.events);
    for i in 0..cfg.events {
        let (s, k) = (i % stations, i / stations);
        let mut rng = root.fork(1_000_000 + i as u64);
        let sequence = cfg.sequence.then(|| {
            if middle.contains(&k) {
                let u = (k - middle.start) as f64 / (middle.len().max(2) - 1) as f64;
                (EventClass::Foreshock, middle_source(u))
            } else if k < half {
                let u = k as f64 / half.max(1) as f64;
                (
                    EventClass::Foreshock,
                    sequence_source(EventClass::Foreshock, u),
                )
            } else {
                let after = (per_station - half).max(2) - 1;
                let u = (k - half) as f64 / after as f64;
                (
                    EventClass::Aftershock,
                    sequence_source(EventClass::Aftershock, u),
                )
            }
        });
        let ev = EventModel::draw(&mut rng, sequence);
        let p_index = k * slot + (rng.range(20.0, 40.0) * TARGET_RATE_HZ) as usize;
        let tp = ev.distance_km / VP_KM_S;
        let ts = ev.distance_km / VS_KM_S;
        let s_index = p_index + ((ts - tp) * TARGET_RATE_HZ) as usize;
        // Amplitude grows with magnitude and decays with distance (counts).
        let p_peak = 10f64.powf(0.6 * ev.magnitude + 2.4) * 10.0 / ev.distance_km;
        // Coda decay grows with magnitude but dies out well within the event's slot.
        let p_decay = 0.3 + 0.1 * 10f64.powf(0.3 * (ev.magnitude - 1.0));
        let p = phase(&mut rng, &ev, tp, ev.corner_hz, p_decay, p_peak);
        let sw = phase(
            &mut rng,
            &ev,
            ts,
            ev.corner_hz / 1.5,
            2.0 * p_decay,
            2.5 * p_peak,
        );
        let (sin_b, cos_b) = ev.back_azimuth.sin_cos();
        let channels = &mut recordings[s].1;
        // P is radial and steep: mostly vertical; S is transverse and horizontal.
        add_at(&mut channels[0], p_index, &p, 0.35 * cos_b);
        add_at(&mut channels[1], p_index, &p, 0.35 * sin_b);
        add_at(&mut channels[2], p_index, &p, 1.0);
        add_at(&mut channels[0], s_index, &sw, -sin_b);
        add_at(&mut channels[1], s_index, &sw, cos_b);
        add_at(&mut channels[2], s_index, &sw, 0.3);
        catalog.push(CatalogEvent {
            event_id: format!("syn{}-{i:05}", cfg.seed),
            station: recordings[s].0.to_string(),
            p_ns: cfg.start_ns + p_index as i64 * TARGET_PERIOD_NS,
            magnitude: (ev.magnitude * 1000.0).round() / 1000.0,
            class: ev.class,
        });
    }
    let stations = recordings
        .into_iter()
        .map(|(key, channels)| StationRecording {
            key,
            start_ns: cfg.start_ns,
            channels: channels.map(|c| {
                c.iter()
                    .map(|v| v.round().clamp(i32::MIN as f64, i32::MAX as f64) as i32)
                    .collect()
            }),
        })
        .collect();
    Synthetic { stations, catalog }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SynthConfig {
        SynthConfig {
            events: 6,
            stations: 2,
            ..SynthConfig::default()
        }
    }

    #[test]
    fn deterministic_by_seed() {
        assert_eq!(generate(&small()), generate(&small()));
        let other = generate(&SynthConfig { seed: 7, ..small() });
        assert_ne!(
            other.stations[0].channels,
            generate(&small()).stations[0].channels
        );
    }

    #[test]
    fn a_sequence_has_foreshocks_before_its_mainshock_and_a_drifting_source() {
        let cfg = SynthConfig {
            events: 40,
            stations: 3,
            sequence: true,
            ..SynthConfig::default()
        };
        let main = cfg.mainshock_ns().unwrap();
        assert_eq!(SynthConfig::default().mainshock_ns(), None);
        let syn = generate(&cfg);
        let (pre, post): (Vec<_>, Vec<_>) = syn
            .catalog
            .iter()
            .partition(|e| e.class == EventClass::Foreshock);
        assert!(
            pre.len().abs_diff(post.len()) <= 3,
            "{} / {}",
            pre.len(),
            post.len()
        );
        assert!(pre.iter().all(|e| e.p_ns < main) && post.iter().all(|e| e.p_ns > main));
        // Toward the mainshock: less stress drop, more κ; after it: recovery.
        let (s0, k0) = sequence_source(EventClass::Foreshock, 0.0);
        let (s1, k1) = sequence_source(EventClass::Foreshock, 1.0);
        let (a0, c0) = sequence_source(EventClass::Aftershock, 0.0);
        let (a1, c1) = sequence_source(EventClass::Aftershock, 1.0);
        assert!(s0 > s1 && k0 < k1 && a0 < a1 && c0 > c1);
        assert!(a0 < s1 && c0 > k1, "the mainshock is the extreme");
        let mid = sequence_source(EventClass::Foreshock, 0.5);
        assert!((mid.0 - (s0 * s1).sqrt()).abs() < 1e-9, "log-linear");
    }

    #[test]
    fn a_middle_sequence_sits_inside_the_foreshock_side_with_a_source_of_its_own() {
        let cfg = SynthConfig {
            events: 160,
            stations: 4,
            sequence: true,
            middle: true,
            ..SynthConfig::default()
        };
        let (start, end) = cfg.middle_span_ns().unwrap();
        let main = cfg.mainshock_ns().unwrap();
        assert!(cfg.start_ns < start && start < end && end < main);
        assert_eq!(
            SynthConfig {
                middle: false,
                ..cfg.clone()
            }
            .middle_span_ns(),
            None
        );
        let syn = generate(&cfg);
        let inside = syn
            .catalog
            .iter()
            .filter(|e| (start..end).contains(&e.p_ns));
        // 20 slots before the mainshock, 0.55–0.75 of them: slots 11..15 × 4 stations.
        assert_eq!(inside.clone().count(), 16);
        assert!(inside.clone().all(|e| e.class == EventClass::Foreshock));
        // Its κ is below every other event's, its stress drop among the aftershocks'.
        let (s0, k0) = middle_source(0.0);
        let (s1, k1) = middle_source(1.0);
        let lowest_other_kappa = [0.0, 1.0]
            .iter()
            .flat_map(|&u| {
                [EventClass::Foreshock, EventClass::Aftershock].map(|c| sequence_source(c, u).1)
            })
            .fold(f64::MAX, f64::min);
        assert!(k0 < k1 && k1 < lowest_other_kappa && s0 < s1);
        // Without the middle sequence the same events have the drifting foreshock source.
        let plain = generate(&SynthConfig {
            middle: false,
            ..cfg.clone()
        });
        let differs =
            |a: &Synthetic, b: &Synthetic| a.stations[0].channels != b.stations[0].channels;
        assert!(differs(&syn, &plain));
        assert_eq!(syn.catalog.len(), plain.catalog.len());
    }

    #[test]
    fn layout_and_labels() {
        let syn = generate(&small());
        assert_eq!(syn.stations.len(), 2);
        assert_eq!(syn.catalog.len(), 6);
        assert_eq!(syn.stations[0].channels[0].len(), 3 * 12000);
        assert_eq!(syn.catalog[1].station, "XX.SYN01.00.HH");
        for e in &syn.catalog {
            assert!((1.5..=4.0).contains(&e.magnitude));
        }
    }

    /// Foreshocks carry more high-frequency energy than aftershocks of the same magnitude.
    #[test]
    fn foreshocks_are_richer_in_high_frequencies() {
        let mut rng = Rng::new(5);
        let mut ratio = |class: EventClass| {
            let mut ev = EventModel::draw(&mut rng, None);
            ev.class = class;
            ev.magnitude = 3.0;
            let (stress, kappa) = if class == EventClass::Foreshock {
                (100.0, 0.015)
            } else {
                (10.0, 0.035)
            };
            ev.kappa_s = kappa;
            ev.corner_hz = 4.9e6 * 3.5 * (stress / 10f64.powf(1.5 * 3.0 + 16.1)).cbrt();
            let w = phase(&mut rng, &ev, 3.0, ev.corner_hz, 1.0, 1000.0);
            // High-pass proxy: energy of the first difference relative to the signal energy.
            let e: f64 = w.iter().map(|v| v * v).sum();
            let d: f64 = w.windows(2).map(|p| (p[1] - p[0]).powi(2)).sum();
            d / e
        };
        let fore: f64 = (0..20).map(|_| ratio(EventClass::Foreshock)).sum();
        let after: f64 = (0..20).map(|_| ratio(EventClass::Aftershock)).sum();
        assert!(fore > 1.5 * after, "foreshock {fore} vs aftershock {after}");
    }
}
