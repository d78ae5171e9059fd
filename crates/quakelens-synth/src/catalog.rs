//! The event catalogue that labels windows: which station saw which event when, its magnitude and
//! class. Written beside synthetic data; users may supply their own in the same CSV layout.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Foreshock (label 0) or aftershock (label 1), the CNN's two classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventClass {
    Foreshock,
    Aftershock,
}

impl EventClass {
    pub fn label(self) -> i32 {
        match self {
            Self::Foreshock => 0,
            Self::Aftershock => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Foreshock => "foreshock",
            Self::Aftershock => "aftershock",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "foreshock" | "pre" | "0" => Some(Self::Foreshock),
            "aftershock" | "post" | "1" => Some(Self::Aftershock),
            _ => None,
        }
    }
}

/// One event as recorded at one station.
#[derive(Clone, Debug, PartialEq)]
pub struct CatalogEvent {
    pub event_id: String,
    /// `NET.STA.LOC.BAND`, as windows name their station.
    pub station: String,
    /// P arrival at the station, ns since the epoch.
    pub p_ns: i64,
    pub magnitude: f64,
    pub class: EventClass,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path} line {line}: {reason}")]
    Parse {
        path: String,
        line: usize,
        reason: String,
    },
}

const HEADER: &str = "event_id,station,p_time,magnitude,class";

/// Writes the catalogue as CSV (`event_id,station,p_time,magnitude,class`, times RFC 3339).
pub fn write_catalog(path: &Path, events: &[CatalogEvent]) -> Result<(), CatalogError> {
    let mut text = String::from(HEADER);
    text.push('\n');
    for e in events {
        text.push_str(&format!(
            "{},{},{},{:.3},{}\n",
            e.event_id,
            e.station,
            quakelens_signal::time::format_ns(e.p_ns),
            e.magnitude,
            e.class.name()
        ));
    }
    std::fs::write(path, text).map_err(|error| CatalogError::Io {
        path: path.display().to_string(),
        error,
    })
}

/// Reads a catalogue written by [`write_catalog`] (or by hand in that layout).
pub fn read_catalog(path: &Path) -> Result<Vec<CatalogEvent>, CatalogError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| CatalogError::Io {
        path: name.clone(),
        error,
    })?;
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.trim() == HEADER => {}
        _ => {
            return Err(CatalogError::Parse {
                path: name,
                line: 1,
                reason: format!("expected header '{HEADER}'"),
            })
        }
    }
    let mut events = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let err = |reason: String| CatalogError::Parse {
            path: name.clone(),
            line: i + 1,
            reason,
        };
        let cols: Vec<&str> = line.split(',').collect();
        if cols.len() != 5 {
            return Err(err(format!("expected 5 columns, found {}", cols.len())));
        }
        let p_ns = quakelens_signal::time::parse_ns(cols[2])
            .ok_or_else(|| err(format!("bad p_time '{}'", cols[2])))?;
        let magnitude: f64 = cols[3]
            .parse()
            .map_err(|_| err(format!("bad magnitude '{}'", cols[3])))?;
        let class =
            EventClass::parse(cols[4]).ok_or_else(|| err(format!("bad class '{}'", cols[4])))?;
        events.push(CatalogEvent {
            event_id: cols[0].to_string(),
            station: cols[1].to_string(),
            p_ns,
            magnitude,
            class,
        });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.csv");
        let events = vec![CatalogEvent {
            event_id: "ev1".into(),
            station: "XX.SYN00.00.HH".into(),
            p_ns: 1_700_000_000_120_000_000,
            magnitude: 2.5,
            class: EventClass::Aftershock,
        }];
        write_catalog(&path, &events).unwrap();
        assert_eq!(read_catalog(&path).unwrap(), events);
        std::fs::write(
            &path,
            format!("{HEADER}\nev,XX,2020-01-01T00:00:00Z,x,pre\n"),
        )
        .unwrap();
        let e = read_catalog(&path).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("magnitude"), "{e}");
    }
}
