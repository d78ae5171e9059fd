//! The paper's time-to-failure classes and its time-ordered split (Laurenti et al. 2024).
//!
//! Time to failure (TTF) is an event's origin time minus the mainshock's. Events before the
//! mainshock are *pre*, after it *post*; the larger side is shuffled and cut to the smaller one's
//! size; then each side, in time order, is cut into equal-count parts: 1 (2 classes), 2 (4) or 4
//! (9, with an intermediate sequence between given times as a class of its own between them).
//! The unit is the event (`source_id`), so every window of an event has its class, and the split
//! by event keeps each event on one side.
//!
//! Choices the paper leaves open, made here: an event at the mainshock's origin time (the
//! mainshock itself) is in no class; the shuffle is the order of [`keyed_hash`] of the event id
//! under the seed (reproducible outside quakelens, stable when events are added); a side of `n`
//! events cut into `q` parts gives the first `n mod q` parts one event more (`numpy.array_split`);
//! ties in time are ordered by event id.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::dataset::{keyed_hash, Split, SplitPlan};

/// The Norcia (Mw 6.5) mainshock, the paper's default.
pub const NORCIA_MAINSHOCK: &str = "2016-10-30T07:40:17Z";

#[derive(Debug, thiserror::Error)]
#[error("time-to-failure labels: {0}")]
pub struct LabelError(pub String);

/// How many classes: 2 (pre/post), 4 (halves) or 9 (quarters and a middle sequence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClassCount {
    Two,
    Four,
    Nine,
}

impl ClassCount {
    /// The scheme with `n` classes, if the paper has one.
    pub fn from_count(n: i64) -> Option<Self> {
        match n {
            2 => Some(ClassCount::Two),
            4 => Some(ClassCount::Four),
            9 => Some(ClassCount::Nine),
            _ => None,
        }
    }

    pub fn count(self) -> usize {
        match self {
            ClassCount::Two => 2,
            ClassCount::Four => 4,
            ClassCount::Nine => 9,
        }
    }

    /// Equal-count parts per side of the mainshock.
    fn parts(self) -> usize {
        match self {
            ClassCount::Two => 1,
            ClassCount::Four => 2,
            ClassCount::Nine => 4,
        }
    }

    /// Class names in logit order (2 classes keep the CNN2D's names).
    pub fn names(self) -> Vec<String> {
        match self {
            ClassCount::Two => vec!["foreshock".into(), "aftershock".into()],
            ClassCount::Four => ["pre_early", "pre_late", "post_early", "post_late"]
                .map(String::from)
                .to_vec(),
            ClassCount::Nine => (1..=4)
                .map(|i| format!("pre_{i}"))
                .chain(["middle".to_string()])
                .chain((1..=4).map(|i| format!("post_{i}")))
                .collect(),
        }
    }
}

impl std::str::FromStr for ClassCount {
    type Err = LabelError;
    fn from_str(s: &str) -> Result<Self, LabelError> {
        match s.trim() {
            "2" => Ok(ClassCount::Two),
            "4" => Ok(ClassCount::Four),
            "9" => Ok(ClassCount::Nine),
            other => Err(LabelError(format!(
                "--classes {other:?}: the paper's schemes are 2, 4 or 9"
            ))),
        }
    }
}

/// How to turn event times into classes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TtfScheme {
    pub classes: ClassCount,
    pub mainshock_ns: i64,
    /// The intermediate sequence `[start, end)` (9 classes only).
    pub middle: Option<(i64, i64)>,
    /// Seeds the balancing shuffle.
    pub seed: u64,
}

/// One event and its origin time.
#[derive(Clone, Debug, PartialEq)]
pub struct EventTime {
    pub id: String,
    pub origin_ns: i64,
}

/// An event that has a class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LabelledEvent {
    pub id: String,
    pub origin_ns: i64,
    pub class: usize,
}

/// The classes of the events kept, in time order, and what was left out.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TtfLabels {
    pub names: Vec<String>,
    pub events: Vec<LabelledEvent>,
    /// Events per class.
    pub counts: Vec<usize>,
    /// Events of the larger side cut by the balancing.
    pub left_out_by_balance: usize,
    /// Events at the mainshock's origin time (the mainshock itself).
    pub at_mainshock: usize,
}

/// `numpy.array_split` sizes: `n` into `q` parts, the first `n mod q` one larger.
fn part_sizes(n: usize, q: usize) -> Vec<usize> {
    (0..q).map(|i| n / q + usize::from(i < n % q)).collect()
}

fn by_time(a: &EventTime, b: &EventTime) -> std::cmp::Ordering {
    (a.origin_ns, &a.id).cmp(&(b.origin_ns, &b.id))
}

fn describe(t_ns: i64) -> String {
    quakelens_signal::time::format_ns(t_ns)
}

impl TtfScheme {
    /// Classes for `events` (one entry per event; repeats with the same time are merged).
    pub fn assign(&self, events: &[EventTime]) -> Result<TtfLabels, LabelError> {
        let events = unique(events)?;
        let (first, last) = match (events.first(), events.last()) {
            (Some(f), Some(l)) => (f.origin_ns, l.origin_ns),
            _ => return Err(LabelError("no events with an origin time".into())),
        };
        let middle = match (self.classes, self.middle) {
            (ClassCount::Nine, None) => {
                return Err(LabelError(
                    "9 classes need the intermediate sequence (--middle START..END)".into(),
                ))
            }
            (ClassCount::Nine, Some((s, e))) => {
                if s >= e {
                    return Err(LabelError(format!(
                        "--middle {}..{} is empty",
                        describe(s),
                        describe(e)
                    )));
                }
                if (s..e).contains(&self.mainshock_ns) {
                    return Err(LabelError(format!(
                        "--middle {}..{} contains the mainshock {}",
                        describe(s),
                        describe(e),
                        describe(self.mainshock_ns)
                    )));
                }
                Some((s, e))
            }
            (_, Some(_)) => {
                return Err(LabelError("--middle applies to 9 classes only".to_string()))
            }
            (_, None) => None,
        };
        let span = || format!("the events span {} to {}", describe(first), describe(last));
        let in_middle = |t: i64| middle.is_some_and(|(s, e)| (s..e).contains(&t));
        let (mut pre, mut post, mut mid) = (Vec::new(), Vec::new(), Vec::new());
        let mut at_mainshock = 0;
        for e in events {
            if in_middle(e.origin_ns) {
                mid.push(e);
            } else if e.origin_ns < self.mainshock_ns {
                pre.push(e);
            } else if e.origin_ns > self.mainshock_ns {
                post.push(e);
            } else {
                at_mainshock += 1;
            }
        }
        let main = describe(self.mainshock_ns);
        if pre.is_empty() || post.is_empty() {
            let side = if pre.is_empty() { "before" } else { "after" };
            return Err(LabelError(format!(
                "no events {side} the mainshock {main} ({})",
                span()
            )));
        }
        if middle.is_some() && mid.is_empty() {
            return Err(LabelError(format!(
                "no events inside --middle ({})",
                span()
            )));
        }
        let (keep, left_out_by_balance) = balance(&mut pre, &mut post, self.seed);
        let q = self.classes.parts();
        if keep < q {
            return Err(LabelError(format!(
                "{keep} event(s) on each side of the mainshock {main} after balancing, {} classes need {q}",
                self.classes.count()
            )));
        }
        let mut labelled = Vec::new();
        let mut class = 0;
        let mut push_parts = |side: Vec<EventTime>, parts: usize, class: &mut usize| {
            let n = side.len();
            let mut it = side.into_iter();
            for size in part_sizes(n, parts) {
                for e in it.by_ref().take(size) {
                    labelled.push(LabelledEvent {
                        id: e.id,
                        origin_ns: e.origin_ns,
                        class: *class,
                    });
                }
                *class += 1;
            }
        };
        push_parts(pre, q, &mut class);
        if !mid.is_empty() {
            push_parts(mid, 1, &mut class);
        }
        push_parts(post, q, &mut class);
        let names = self.classes.names();
        let mut counts = vec![0; names.len()];
        for e in &labelled {
            counts[e.class] += 1;
        }
        labelled.sort_by(|a, b| (a.origin_ns, &a.id).cmp(&(b.origin_ns, &b.id)));
        Ok(TtfLabels {
            names,
            events: labelled,
            counts,
            left_out_by_balance,
            at_mainshock,
        })
    }
}

/// The paper's balancing: the larger side, in shuffled order, cut to the smaller side's size
/// (both left in time order). Returns the size kept and how many events were cut.
fn balance(pre: &mut Vec<EventTime>, post: &mut Vec<EventTime>, seed: u64) -> (usize, usize) {
    let keep = pre.len().min(post.len());
    let left_out = pre.len() + post.len() - 2 * keep;
    for side in [pre, post] {
        if side.len() > keep {
            side.sort_by(|a, b| {
                (keyed_hash(seed, &a.id), &a.id).cmp(&(keyed_hash(seed, &b.id), &b.id))
            });
            side.truncate(keep);
            side.sort_by(by_time);
        }
    }
    (keep, left_out)
}

/// Two classes from labels already stored (0 = foreshock = pre, 1 = aftershock = post, as a
/// catalogue labelled them against its own mainshock), balanced as the paper does. For lakes
/// whose events carry labels but no origin times.
pub fn stored_two_classes(
    events: &[EventTime],
    label_of: &HashMap<String, i32>,
    seed: u64,
) -> Result<TtfLabels, LabelError> {
    let (mut pre, mut post) = (Vec::new(), Vec::new());
    for e in unique(events)? {
        match label_of.get(&e.id) {
            Some(0) => pre.push(e),
            Some(1) => post.push(e),
            Some(other) => {
                return Err(LabelError(format!(
                    "event {} has label {other}, two classes take 0 (foreshock) or 1 (aftershock)",
                    e.id
                )))
            }
            None => {}
        }
    }
    if pre.is_empty() || post.is_empty() {
        return Err(LabelError(format!(
            "the stored labels have {} foreshock and {} aftershock events; two classes need both",
            pre.len(),
            post.len()
        )));
    }
    let (_, left_out_by_balance) = balance(&mut pre, &mut post, seed);
    let mut events: Vec<LabelledEvent> = [(0, pre), (1, post)]
        .into_iter()
        .flat_map(|(class, side)| {
            side.into_iter().map(move |e| LabelledEvent {
                id: e.id,
                origin_ns: e.origin_ns,
                class,
            })
        })
        .collect();
    events.sort_by(|a, b| (a.origin_ns, &a.id).cmp(&(b.origin_ns, &b.id)));
    let n = events.len() / 2;
    Ok(TtfLabels {
        names: ClassCount::Two.names(),
        events,
        counts: vec![n, n],
        left_out_by_balance,
        at_mainshock: 0,
    })
}

/// Events sorted by time, each once; one event with two origin times is an error.
fn unique(events: &[EventTime]) -> Result<Vec<EventTime>, LabelError> {
    let mut seen: HashMap<&str, i64> = HashMap::new();
    let mut out = Vec::new();
    for e in events {
        match seen.get(e.id.as_str()) {
            Some(&t) if t != e.origin_ns => {
                return Err(LabelError(format!(
                    "event {} has two origin times, {} and {}",
                    e.id,
                    describe(t),
                    describe(e.origin_ns)
                )))
            }
            Some(_) => {}
            None => {
                seen.insert(&e.id, e.origin_ns);
                out.push(e.clone());
            }
        }
    }
    out.sort_by(by_time);
    Ok(out)
}

/// How events are assigned to training, validation and test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventSplit {
    /// Each event by its hash under the seed ([`SplitPlan`]).
    Random,
    /// The paper's default: within each class, in time order, training takes the first and the
    /// last `(1 − valid − test)/2`, validation the `valid` after the first part, test the
    /// `test` after that, so validation and test sit in the middle of each class's span.
    TimeOrdered,
}

impl std::str::FromStr for EventSplit {
    type Err = LabelError;
    fn from_str(s: &str) -> Result<Self, LabelError> {
        match s {
            "random" => Ok(EventSplit::Random),
            "time" | "time-ordered" => Ok(EventSplit::TimeOrdered),
            other => Err(LabelError(format!(
                "split {other:?}: expected random or time"
            ))),
        }
    }
}

impl TtfLabels {
    /// Each event's side, by event id.
    pub fn split(&self, mode: EventSplit, plan: &SplitPlan) -> HashMap<String, Split> {
        match mode {
            EventSplit::Random => self
                .events
                .iter()
                .map(|e| (e.id.clone(), plan.assign(&e.id)))
                .collect(),
            EventSplit::TimeOrdered => {
                let head = (1.0 - plan.valid - plan.test) / 2.0;
                let mut out = HashMap::new();
                for class in 0..self.names.len() {
                    // `events` is in time order, so each class's events are too.
                    let of_class: Vec<&LabelledEvent> =
                        self.events.iter().filter(|e| e.class == class).collect();
                    let n = of_class.len() as f64;
                    // ε: 0.35 + 0.1 + 0.2 is 0.6499…9 in floating point, which would take one
                    // event from the test share of every 20.
                    let cut = |fraction: f64| (n * fraction + 1e-9).floor() as usize;
                    let a = cut(head);
                    let b = cut(head + plan.valid);
                    let c = cut(head + plan.valid + plan.test);
                    for (i, e) in of_class.iter().enumerate() {
                        let side = if i >= a && i < b {
                            Split::Valid
                        } else if i >= b && i < c {
                            Split::Test
                        } else {
                            Split::Train
                        };
                        out.insert(e.id.clone(), side);
                    }
                }
                out
            }
        }
    }

    /// The class of `event`, if it has one.
    pub fn class_of(&self) -> HashMap<&str, usize> {
        self.events
            .iter()
            .map(|e| (e.id.as_str(), e.class))
            .collect()
    }
}

/// The catalogue column holding an event's origin time (the D-set's attribute name).
pub const ORIGIN_COLUMN: &str = "source_origin_time";

/// Each event's origin time: the catalogue's `source_origin_time` where the window has one,
/// else the earliest start of the event's windows (for event windows, 5 s before the first P
/// arrival: time to failure then counts from the first arrival, seconds after the origin, which
/// moves no event across a class boundary unless it is that close to one). An origin time that
/// does not parse is an error naming the window.
pub fn event_times(examples: &[crate::dataset::Example]) -> Result<Vec<EventTime>, LabelError> {
    let mut origin: HashMap<&str, i64> = HashMap::new();
    let mut fallback: HashMap<&str, i64> = HashMap::new();
    for e in examples {
        match quakelens_lake::catalog_value(&e.catalog, ORIGIN_COLUMN) {
            Some(text) => {
                let t = quakelens_signal::time::parse_utc(text).ok_or_else(|| {
                    LabelError(format!(
                        "window {}: {ORIGIN_COLUMN} {text:?} is not a time",
                        e.window_id
                    ))
                })?;
                origin.insert(&e.group, t);
            }
            None => {
                let t = fallback.entry(&e.group).or_insert(e.start_ns);
                *t = (*t).min(e.start_ns);
            }
        }
    }
    // A catalogued origin wins over the windows' starts.
    fallback.extend(origin);
    let mut out: Vec<EventTime> = fallback
        .into_iter()
        .map(|(id, origin_ns)| EventTime {
            id: id.to_string(),
            origin_ns,
        })
        .collect();
    out.sort_by(by_time);
    Ok(out)
}

/// The paper's split fractions: 70 % training, 10 % validation, 20 % test.
pub fn paper_split(seed: u64) -> SplitPlan {
    SplitPlan {
        seed,
        valid: 0.1,
        test: 0.2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000_000_000;

    fn events(hours: &[i64]) -> Vec<EventTime> {
        hours
            .iter()
            .enumerate()
            .map(|(i, &h)| EventTime {
                id: format!("ev{i:03}"),
                origin_ns: h * H,
            })
            .collect()
    }

    fn scheme(classes: ClassCount, middle: Option<(i64, i64)>) -> TtfScheme {
        TtfScheme {
            classes,
            mainshock_ns: 100 * H,
            middle,
            seed: 1,
        }
    }

    #[test]
    fn four_classes_are_time_ordered_halves_of_balanced_sides() {
        // 7 pre events, 5 post, one at the mainshock.
        let ev = events(&[1, 2, 3, 4, 5, 6, 7, 100, 101, 102, 103, 104, 105]);
        let l = scheme(ClassCount::Four, None).assign(&ev).unwrap();
        assert_eq!(l.at_mainshock, 1);
        assert_eq!(l.left_out_by_balance, 2);
        assert_eq!(l.counts, vec![3, 2, 3, 2]);
        let classes: Vec<usize> = l.events.iter().map(|e| e.class).collect();
        assert!(classes.windows(2).all(|w| w[0] <= w[1]), "{classes:?}");
        let post: Vec<&str> = l.events[5..].iter().map(|e| e.id.as_str()).collect();
        assert_eq!(post, ["ev008", "ev009", "ev010", "ev011", "ev012"]);
    }

    #[test]
    fn nine_classes_need_a_middle_that_leaves_out_the_mainshock() {
        let ev = events(&(0..40).map(|i| i * 5).collect::<Vec<_>>());
        let err = scheme(ClassCount::Nine, None).assign(&ev).unwrap_err();
        assert!(err.to_string().contains("--middle"), "{err}");
        let err = scheme(ClassCount::Nine, Some((90 * H, 110 * H)))
            .assign(&ev)
            .unwrap_err();
        assert!(err.to_string().contains("contains the mainshock"), "{err}");
        let l = scheme(ClassCount::Nine, Some((50 * H, 70 * H)))
            .assign(&ev)
            .unwrap();
        assert_eq!(l.counts[4], 4, "hours 50, 55, 60, 65");
        assert_eq!(l.names[4], "middle");
        // Every middle event is in the middle class, whatever the balancing.
        assert!(l
            .events
            .iter()
            .all(|e| (e.class == 4) == (50 * H..70 * H).contains(&e.origin_ns)));
    }

    #[test]
    fn a_mainshock_outside_the_data_is_refused_with_the_span() {
        let ev = events(&[1, 2, 3]);
        let err = scheme(ClassCount::Two, None).assign(&ev).unwrap_err();
        assert!(
            err.to_string().contains("no events after the mainshock"),
            "{err}"
        );
        assert!(err.to_string().contains("span"), "{err}");
    }

    #[test]
    fn time_ordered_split_puts_validation_and_test_mid_class() {
        let ev = events(&(0..20).chain(101..121).collect::<Vec<_>>());
        let l = scheme(ClassCount::Two, None).assign(&ev).unwrap();
        let split = l.split(EventSplit::TimeOrdered, &paper_split(0));
        let sides: Vec<Split> = l.events[..20].iter().map(|e| split[&e.id]).collect();
        use Split::*;
        let mut want = vec![Train; 7];
        want.extend([Valid; 2]);
        want.extend([Test; 4]);
        want.extend([Train; 7]);
        assert_eq!(sides, want);
    }

    #[test]
    fn array_split_sizes() {
        assert_eq!(part_sizes(10, 4), vec![3, 3, 2, 2]);
        assert_eq!(part_sizes(4, 4), vec![1, 1, 1, 1]);
    }

    #[test]
    fn origin_times_come_from_the_catalogue_else_the_first_window() {
        use crate::dataset::Example;
        let ex = |id: &str, group: &str, start_ns: i64, origin: Option<&str>| Example {
            window_id: id.into(),
            group: group.into(),
            start_ns,
            catalog: origin
                .map(|o| vec![(ORIGIN_COLUMN.to_string(), o.to_string())])
                .unwrap_or_default(),
            ..Example::default()
        };
        let t = event_times(&[
            ex("a1", "A", 50 * H, None),
            ex("a2", "A", 40 * H, None),
            ex("b1", "B", 90 * H, Some("1970-01-01 02:00:00")),
            ex("b2", "B", 95 * H, None),
            ex("c1", "C", 0, Some("NaN")),
        ])
        .unwrap();
        let got: Vec<(&str, i64)> = t.iter().map(|e| (e.id.as_str(), e.origin_ns)).collect();
        assert_eq!(got, vec![("C", 0), ("B", 2 * H), ("A", 40 * H)]);
        let err = event_times(&[ex("x", "X", 0, Some("yesterday"))]).unwrap_err();
        assert!(
            err.to_string()
                .contains("window x: source_origin_time \"yesterday\""),
            "{err}"
        );
    }

    #[test]
    fn stored_labels_give_two_balanced_classes() {
        let ev = events(&[1, 2, 3, 4, 5, 6]);
        let labels: HashMap<String, i32> = ev
            .iter()
            .enumerate()
            .map(|(i, e)| (e.id.clone(), i32::from(i >= 4)))
            .collect();
        let l = stored_two_classes(&ev, &labels, 1).unwrap();
        assert_eq!((l.counts.clone(), l.left_out_by_balance), (vec![2, 2], 2));
        assert!(l
            .events
            .iter()
            .filter(|e| e.class == 1)
            .all(|e| e.origin_ns >= 5 * H));
        let only_pre: HashMap<String, i32> = labels.keys().map(|k| (k.clone(), 0)).collect();
        let err = stored_two_classes(&ev, &only_pre, 1).unwrap_err();
        assert!(
            err.to_string().contains("6 foreshock and 0 aftershock"),
            "{err}"
        );
    }
}
