//! Writing records into the lake: each call is one Delta commit of one table, carrying the
//! source positions it covers, so a replay after a crash is recognised from the log.

use arrow::array::RecordBatch;

use crate::batches::{
    cnn_shap_batch, features_batch, forest_shap_batch, magnitudes_batch, scores_batch,
    waveform_shap_batch, windows_batch, SpectrogramAxes,
};
use crate::error::LakeError;
use crate::location::LakeLocation;
use crate::record::{
    CnnShapRecord, ForestShapRecord, MagnitudeRecord, ScoreRecord, WaveformShapRecord, WindowRecord,
};
use crate::schema::{LakeFormat, Table};
use crate::tables::{Committed, Tables, Txn};

/// Writes records into the lake's tables, for windows of one [`LakeFormat`].
pub struct LakeWriter {
    tables: Tables,
}

impl LakeWriter {
    /// Opens the lake at `location` for windows of `format`, refusing a lake of the old
    /// layout and tables made for other windows or another schema version.
    pub async fn open(location: &LakeLocation, format: LakeFormat) -> Result<Self, LakeError> {
        crate::convert::refuse_old_layout(location)?;
        let mut tables = Tables::new(location.clone(), format);
        for table in [Table::Windows, Table::Features] {
            tables.existing(table).await?;
        }
        // Opened here so that an unreachable or refused store fails at start, not at the
        // first batch.
        tables.table(Table::Windows).await?;
        Ok(Self { tables })
    }

    /// For a batch job: checkpoints now every table whose log grew `delta.checkpointInterval`
    /// versions past its last checkpoint (earlier runs' commits), and never again as this
    /// writer commits, so a checkpoint (which streams the whole table state) happens before
    /// the job's own work, not in the middle of it.
    pub async fn checkpoint_at_open(&mut self) -> Result<(), LakeError> {
        self.tables.checkpoints_as_committed = false;
        for table in Table::ALL {
            if let Some(t) = self.tables.existing(table).await? {
                if t.checkpoint_behind() {
                    t.checkpoint().await;
                }
            }
        }
        Ok(())
    }

    pub fn location(&self) -> &LakeLocation {
        &self.tables.location
    }

    async fn append(
        &mut self,
        table: Table,
        batch: Option<RecordBatch>,
        txns: &[Txn],
    ) -> Result<Committed, LakeError> {
        self.tables.append(table, batch, txns).await
    }

    /// The keys (`window_id`, and `model_hash` for model outputs, else empty) of the rows
    /// `table` gained in files written since `since` (nothing when the table does not exist).
    pub async fn recent_keys(
        &mut self,
        table: Table,
        since: std::time::SystemTime,
    ) -> Result<Vec<(String, String)>, LakeError> {
        self.tables.recent_keys(table, since).await
    }

    /// The `(window_id, model_hash)` keys already in one `day` × `stream` partition of
    /// `table` (model_hash empty for tables without one).
    pub async fn partition_keys(
        &mut self,
        table: Table,
        day: &str,
        stream: &str,
    ) -> Result<Vec<(String, String)>, LakeError> {
        self.tables.partition_keys(table, day, stream).await
    }

    /// The source position last committed for `app_id` in `table`.
    pub async fn txn_version(
        &mut self,
        table: Table,
        app_id: &str,
    ) -> Result<Option<i64>, LakeError> {
        self.tables.txn_version(table, app_id).await
    }

    /// `windows` rows (the spectrograms and the window facts).
    pub async fn write_windows(
        &mut self,
        rows: &[WindowRecord],
        txns: &[Txn],
    ) -> Result<Committed, LakeError> {
        let format = *self.format();
        let rows: Vec<&WindowRecord> = rows.iter().collect();
        let batch = (!rows.is_empty())
            .then(|| windows_batch(&rows, &format))
            .transpose()?;
        self.append(Table::Windows, batch, txns).await
    }

    /// `features` rows of the same windows.
    pub async fn write_features(
        &mut self,
        rows: &[WindowRecord],
        txns: &[Txn],
    ) -> Result<Committed, LakeError> {
        let format = *self.format();
        let rows: Vec<&WindowRecord> = rows.iter().collect();
        let batch = (!rows.is_empty())
            .then(|| features_batch(&rows, &format))
            .transpose()?;
        self.append(Table::Features, batch, txns).await
    }

    /// Both tables of `rows`, windows first: a writer that dies between the two commits is
    /// completed by a replay, which finds the features commit missing from the log.
    pub async fn write_windows_and_features(
        &mut self,
        rows: &[WindowRecord],
        txns: &[Txn],
    ) -> Result<Committed, LakeError> {
        let w = self.write_windows(rows, txns).await?;
        let f = self.write_features(rows, txns).await?;
        Ok(Committed {
            rows: w.rows,
            files: w.files + f.files,
            version: w.version,
        })
    }

    pub async fn write_scores(
        &mut self,
        rows: &[ScoreRecord],
        txns: &[Txn],
    ) -> Result<Committed, LakeError> {
        let rows: Vec<&ScoreRecord> = rows.iter().collect();
        let batch = (!rows.is_empty())
            .then(|| scores_batch(&rows))
            .transpose()?;
        self.append(Table::Scores, batch, txns).await
    }

    pub async fn write_magnitudes(
        &mut self,
        rows: &[MagnitudeRecord],
        txns: &[Txn],
    ) -> Result<Committed, LakeError> {
        let rows: Vec<&MagnitudeRecord> = rows.iter().collect();
        let batch = (!rows.is_empty())
            .then(|| magnitudes_batch(&rows))
            .transpose()?;
        self.append(Table::Magnitudes, batch, txns).await
    }

    /// Forest explanations, grouped by the feature names their values follow, in one commit.
    pub async fn write_forest_shap(
        &mut self,
        groups: &[(Vec<String>, Vec<ForestShapRecord>)],
        txns: &[Txn],
    ) -> Result<Committed, LakeError> {
        let mut batches = Vec::new();
        for (names, rows) in groups.iter().filter(|(_, r)| !r.is_empty()) {
            let rows: Vec<&ForestShapRecord> = rows.iter().collect();
            batches.push(forest_shap_batch(&rows, names)?);
        }
        let batch = concat(Table::ForestShap, batches)?;
        let mut c = self.append(Table::ForestShap, batch, txns).await?;
        c.rows = groups.iter().map(|(_, r)| r.len()).sum();
        Ok(c)
    }

    /// CNN explanations, one row per spectrogram cell.
    pub async fn write_cnn_shap(
        &mut self,
        rows: &[CnnShapRecord],
        axes: &SpectrogramAxes,
        txns: &[Txn],
    ) -> Result<Committed, LakeError> {
        let refs: Vec<&CnnShapRecord> = rows.iter().collect();
        let batch = (!refs.is_empty())
            .then(|| cnn_shap_batch(&refs, axes))
            .transpose()?;
        let mut c = self.append(Table::CnnShap, batch, txns).await?;
        c.rows = rows.len();
        Ok(c)
    }

    /// Waveform-model explanations, one row per cell.
    pub async fn write_waveform_shap(
        &mut self,
        rows: &[WaveformShapRecord],
        txns: &[Txn],
    ) -> Result<Committed, LakeError> {
        let refs: Vec<&WaveformShapRecord> = rows.iter().collect();
        let batch = (!refs.is_empty())
            .then(|| waveform_shap_batch(&refs))
            .transpose()?;
        let mut c = self.append(Table::WaveformShap, batch, txns).await?;
        c.rows = rows.len();
        Ok(c)
    }

    pub fn format(&self) -> &LakeFormat {
        self.tables.format()
    }
}

fn concat(table: Table, batches: Vec<RecordBatch>) -> Result<Option<RecordBatch>, LakeError> {
    let Some(first) = batches.first() else {
        return Ok(None);
    };
    arrow::compute::concat_batches(&first.schema(), &batches)
        .map(Some)
        .map_err(|e| LakeError::Batch {
            table: table.name().into(),
            reason: e.to_string(),
        })
}
