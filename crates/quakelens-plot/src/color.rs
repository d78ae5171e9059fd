//! Colour maps: a perceptually ordered sequential map for spectrogram power and feature values,
//! and a blue–white–red diverging map for signed SHAP values (red pushes the output up).

use crate::canvas::Rgb;

/// Anchors of the sequential map (dark violet → blue → teal → green → yellow, the viridis
/// family), evenly spaced on [0, 1].
const SEQUENTIAL: [Rgb; 5] = [
    Rgb(68, 1, 84),
    Rgb(59, 82, 139),
    Rgb(33, 145, 140),
    Rgb(94, 201, 98),
    Rgb(253, 231, 37),
];

const NEGATIVE: Rgb = Rgb(30, 136, 229);
const POSITIVE: Rgb = Rgb(255, 0, 82);

/// Piecewise-linear interpolation through evenly spaced anchors.
fn through(anchors: &[Rgb], t: f32) -> Rgb {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pos = t * (anchors.len() - 1) as f32;
    let i = (pos.floor() as usize).min(anchors.len() - 2);
    anchors[i].mix(anchors[i + 1], pos - i as f32)
}

/// `t` in [0, 1] → the sequential map (out-of-range values clamp; NaN is the low end).
pub fn sequential(t: f32) -> Rgb {
    through(&SEQUENTIAL, t)
}

/// The colour for a signed value on a symmetric scale `[-limit, limit]`: blue below zero,
/// white at zero, red above.
pub fn diverging(value: f32, limit: f32) -> Rgb {
    if !value.is_finite() || limit <= 0.0 {
        return Rgb::WHITE;
    }
    let t = (value / limit).clamp(-1.0, 1.0);
    if t >= 0.0 {
        Rgb::WHITE.mix(POSITIVE, t)
    } else {
        Rgb::WHITE.mix(NEGATIVE, -t)
    }
}

/// The solid colour of a positive or negative contribution (bars, arrows).
pub fn sign(value: f64) -> Rgb {
    if value >= 0.0 {
        POSITIVE
    } else {
        NEGATIVE
    }
}

/// A feature value's colour in a beeswarm: low values blue, high values red, missing grey.
pub fn low_high(t: f32) -> Rgb {
    if !t.is_finite() {
        return Rgb::GREY;
    }
    through(&[NEGATIVE, Rgb(140, 70, 160), POSITIVE], t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_hits_its_anchors_and_clamps() {
        assert_eq!(sequential(0.0), SEQUENTIAL[0]);
        assert_eq!(sequential(0.5), SEQUENTIAL[2]);
        assert_eq!(sequential(1.0), SEQUENTIAL[4]);
        assert_eq!(sequential(7.0), SEQUENTIAL[4]);
        assert_eq!(sequential(f32::NAN), SEQUENTIAL[0]);
        // Brightness rises along the map, so a grey-scale print keeps the order.
        let luma = |c: Rgb| 0.299 * c.0 as f32 + 0.587 * c.1 as f32 + 0.114 * c.2 as f32;
        let l: Vec<f32> = (0..=10)
            .map(|i| luma(sequential(i as f32 / 10.0)))
            .collect();
        assert!(l.windows(2).all(|w| w[1] > w[0]), "{l:?}");
    }

    #[test]
    fn diverging_is_symmetric_around_white() {
        assert_eq!(diverging(0.0, 1.0), Rgb::WHITE);
        assert_eq!(diverging(2.0, 1.0), POSITIVE);
        assert_eq!(diverging(-2.0, 1.0), NEGATIVE);
        assert_eq!(diverging(f32::NAN, 1.0), Rgb::WHITE);
        let half = diverging(0.5, 1.0);
        assert!(half.0 == 255 && half.1 < 255 && half.1 > 0);
    }
}
