//! Where each forest input comes from in a window: one of the 69 waveform features of the
//! lake's feature set, a typed catalogue attribute (`p_travel_sec`, …), or any other column of
//! the window's catalogue row (the study's forest takes every numeric attributes column).

use quakelens_lake::{catalog_number, CatalogRow, SourceAttributes, WindowRecord};
use quakelens_signal::features::FeatureSet;

/// The study's attributes columns that are not forest inputs (identifiers, the target, and
/// the receiver's position and elevation), as its notebook drops them.
pub const STUDY_EXCLUDED: [&str; 11] = [
    "trace_name",
    "trace_start_time",
    "network_code",
    "receiver_name",
    "receiver_type",
    "receiver_elevation_m",
    "receiver_latitude",
    "receiver_longitude",
    "source_id",
    "source_magnitude_type",
    "source_magnitude",
];

/// One input's source.
#[derive(Clone, Debug, PartialEq)]
pub enum InputSource {
    /// Index into the window's 69 waveform features.
    Feature(usize),
    /// Index into [`SourceAttributes::COLUMNS`].
    Attribute(usize),
    /// A column of the window's catalogue row, read as a number.
    Catalog(String),
}

/// The forest's inputs, resolved against windows whose features are of `set`.
#[derive(Clone, Debug, PartialEq)]
pub struct InputMap {
    pub names: Vec<String>,
    pub sources: Vec<InputSource>,
}

impl InputMap {
    /// Resolves `names`: waveform feature names of `set` first, then typed attributes, then
    /// catalogue columns.
    pub fn new(names: &[String], set: FeatureSet) -> Self {
        let features = set.column_names();
        let sources = names
            .iter()
            .map(|name| {
                if let Some(i) = features.iter().position(|f| f == name) {
                    InputSource::Feature(i)
                } else if let Some(i) = SourceAttributes::COLUMNS.iter().position(|c| c == name) {
                    InputSource::Attribute(i)
                } else {
                    InputSource::Catalog(name.clone())
                }
            })
            .collect();
        Self {
            names: names.to_vec(),
            sources,
        }
    }

    /// The inputs of one window in the forest's order, NaN where missing (or, for a catalogue
    /// cell that is not a number, NaN and the reason).
    pub fn row(&self, w: &WindowRecord) -> (Vec<f64>, Option<String>) {
        self.row_of(&w.features, &w.source, &w.catalog)
    }

    /// [`InputMap::row`] from the parts of a window.
    pub fn row_of(
        &self,
        features: &[f64],
        source: &SourceAttributes,
        catalog: &CatalogRow,
    ) -> (Vec<f64>, Option<String>) {
        let mut problem = None;
        let values = self
            .sources
            .iter()
            .map(|s| match s {
                InputSource::Feature(i) => features.get(*i).copied().unwrap_or(f64::NAN),
                InputSource::Attribute(i) => source.values()[*i].unwrap_or(f64::NAN),
                InputSource::Catalog(name) => match catalog_number(catalog, name) {
                    Ok(v) => v.unwrap_or(f64::NAN),
                    Err(e) => {
                        problem.get_or_insert(e);
                        f64::NAN
                    }
                },
            })
            .collect();
        (values, problem)
    }

    /// Catalogue inputs none of `windows` has: a forest needing them cannot be used on them.
    pub fn absent_catalog_inputs<'a>(
        &'a self,
        windows: impl Iterator<Item = &'a CatalogRow> + Clone,
    ) -> Vec<&'a str> {
        self.sources
            .iter()
            .filter_map(|s| match s {
                InputSource::Catalog(name) => Some(name.as_str()),
                _ => None,
            })
            .filter(|name| {
                !windows
                    .clone()
                    .any(|c| c.binary_search_by(|(k, _)| k.as_str().cmp(name)).is_ok())
            })
            .collect()
    }
}

/// The study's forest inputs for windows with these catalogue rows: every catalogue column
/// whose non-missing values are all numbers (pandas' numeric columns) except
/// [`STUDY_EXCLUDED`], sorted by name, then the 69 features of the study's set.
pub fn study_inputs<'a>(catalogs: impl Iterator<Item = &'a CatalogRow>) -> Vec<String> {
    use std::collections::BTreeMap;
    // column → (any value, all values numeric)
    let mut columns: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    for row in catalogs {
        for (k, v) in row {
            let e = columns.entry(k.as_str()).or_insert((false, true));
            let text = v.trim();
            if !quakelens_lake::is_missing(text) {
                e.0 = true;
                e.1 &= text.parse::<f64>().is_ok();
            }
        }
    }
    let mut out: Vec<String> = columns
        .into_iter()
        .filter(|(name, (any, numeric))| *any && *numeric && !STUDY_EXCLUDED.contains(name))
        .map(|(name, _)| name.to_string())
        .collect();
    out.extend(FeatureSet::Study.column_names());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_resolve_to_features_attributes_and_catalogue() {
        let names: Vec<String> = [
            "f2_c1_minimum_amplitude",
            "p_travel_sec",
            "path_ep_distance_km",
        ]
        .map(String::from)
        .to_vec();
        let map = InputMap::new(&names, FeatureSet::Study);
        assert_eq!(
            map.sources,
            vec![
                InputSource::Feature(24),
                InputSource::Attribute(0),
                InputSource::Catalog("path_ep_distance_km".into())
            ]
        );
        let features: Vec<f64> = (0..69).map(f64::from).collect();
        let source = SourceAttributes {
            p_travel_sec: Some(2.5),
            ..Default::default()
        };
        let catalog: CatalogRow = vec![("path_ep_distance_km".into(), "12.5".into())];
        assert_eq!(
            map.row_of(&features, &source, &catalog).0,
            vec![24.0, 2.5, 12.5]
        );
        let (row, problem) = map.row_of(
            &features,
            &source,
            &vec![("path_ep_distance_km".into(), "far".into())],
        );
        assert!(row[2].is_nan() && problem.unwrap().contains("far"));
        assert_eq!(
            map.absent_catalog_inputs([&catalog].into_iter()),
            Vec::<&str>::new()
        );
        assert_eq!(
            map.absent_catalog_inputs([&Vec::new()].into_iter()),
            vec!["path_ep_distance_km"]
        );
    }

    #[test]
    fn study_inputs_are_the_numeric_columns_but_the_excluded() {
        let rows: Vec<CatalogRow> = vec![
            vec![
                ("p_travel_sec".into(), "2.0".into()),
                ("receiver_latitude".into(), "42.1".into()),
                ("source_magnitude".into(), "3.1".into()),
                ("source_magnitude_type".into(), "ML".into()),
                ("snr_db".into(), "".into()),
                ("trace_start_time".into(), "2016-10-30T06:40:18Z".into()),
                ("weird".into(), "12".into()),
            ],
            vec![
                ("p_travel_sec".into(), "NaN".into()),
                ("snr_db".into(), "10.5".into()),
                ("weird".into(), "n.a.".into()),
            ],
        ];
        let inputs = study_inputs(rows.iter());
        assert_eq!(&inputs[..2], ["p_travel_sec", "snr_db"]);
        assert_eq!(inputs.len(), 2 + 69);
        assert_eq!(inputs[2], "f1_c0_maximum_amplitude");
    }
}
