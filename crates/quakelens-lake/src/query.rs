//! SQL over the lake with DataFusion.

use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::prelude::SessionContext;

use crate::layout::TABLES;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no lake at {0}: run `quakelens run` first or pass --lake")]
    NoLake(String),
    #[error("registering table {table} at {path}: {reason}")]
    Register {
        table: String,
        path: String,
        reason: String,
    },
    #[error("{0}")]
    Sql(String),
}

/// A DataFusion session with every table of a lake registered.
pub struct Lake {
    ctx: SessionContext,
}

impl Lake {
    /// Registers the lake's tables (partition columns `day` and `stream` included).
    pub async fn open(root: &Path) -> Result<Self, QueryError> {
        if !root.is_dir() {
            return Err(QueryError::NoLake(root.display().to_string()));
        }
        let root = root
            .canonicalize()
            .map_err(|e| QueryError::NoLake(format!("{}: {e}", root.display())))?;
        let ctx = SessionContext::new();
        for table in TABLES {
            let dir = root.join(table);
            // A table nothing was written to yet has no schema to infer: leave it out.
            if !holds_parquet(&dir) {
                continue;
            }
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet")
                .with_table_partition_cols(vec![
                    ("day".to_string(), DataType::Utf8),
                    ("stream".to_string(), DataType::Utf8),
                ]);
            let url = format!("{}/", dir.display());
            ctx.register_listing_table(table, &url, options, None, None)
                .await
                .map_err(|e| QueryError::Register {
                    table: table.to_string(),
                    path: url.clone(),
                    reason: e.to_string(),
                })?;
        }
        Ok(Self { ctx })
    }

    /// Runs one SQL statement and collects the result.
    pub async fn sql(&self, query: &str) -> Result<Vec<RecordBatch>, QueryError> {
        let df = self
            .ctx
            .sql(query)
            .await
            .map_err(|e| QueryError::Sql(e.to_string()))?;
        df.collect()
            .await
            .map_err(|e| QueryError::Sql(e.to_string()))
    }

    /// Runs a query and renders it as an ASCII table.
    pub async fn sql_table(&self, query: &str) -> Result<String, QueryError> {
        let batches = self.sql(query).await?;
        arrow::util::pretty::pretty_format_batches(&batches)
            .map(|t| t.to_string())
            .map_err(|e| QueryError::Sql(e.to_string()))
    }
}

/// Whether `dir` (recursively) holds at least one Parquet file.
fn holds_parquet(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            holds_parquet(&p)
        } else {
            p.extension().is_some_and(|x| x == "parquet")
        }
    })
}
