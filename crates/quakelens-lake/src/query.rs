//! SQL over the lake with DataFusion on delta-rs's table providers, read-only: only queries run,
//! under optional time, memory and row limits, and only the lake's own tables are reachable (no
//! DDL to register a path, no `COPY` to write one, no URL tables). Each table is read at one
//! Delta snapshot, so a query never sees a file twice while compaction replaces files.

use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;
use futures::StreamExt;

use crate::error::LakeError;
use crate::location::LakeLocation;
use crate::schema::{LakeFormat, Table};
use crate::tables::{open_table, properties};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("registering table {table}: {reason}")]
    Register { table: String, reason: String },
    /// Anything but a single query: the lake is read-only through SQL.
    #[error("refused: the lake is read-only and only single SELECT queries are served ({0})")]
    Refused(String),
    #[error("query stopped after the {0:?} time limit")]
    Timeout(Duration),
    #[error("query needs more memory than the {limit_mib} MiB limit: {reason}")]
    Memory { limit_mib: usize, reason: String },
    #[error("{0}")]
    Sql(String),
}

/// Which snapshot of every table a session reads (Delta time travel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    /// The table version, for every table (a table with fewer versions is read at its last):
    /// meaningful when a query reads one table.
    Version(i64),
    /// The last commit at or before this time (ns since the epoch), table by table.
    Time(i64),
}

/// Guard rails for one query. `Default` is unlimited (the local `quakelens sql` command).
#[derive(Clone, Debug, Default)]
pub struct QueryLimits {
    /// Wall-clock limit for planning and execution together.
    pub timeout: Option<Duration>,
    /// Memory the query's operators may hold; nothing spills to disk, so past it the query fails.
    pub memory_bytes: Option<usize>,
    /// Rows returned at most; the answer says when it was cut.
    pub max_rows: Option<usize>,
}

/// A query's result.
#[derive(Debug)]
pub struct Answer {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// More rows existed than `max_rows`.
    pub truncated: bool,
}

impl Answer {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// A DataFusion session with every table of a lake registered.
pub struct Lake {
    ctx: SessionContext,
    limits: QueryLimits,
    location: LakeLocation,
    format: Option<LakeFormat>,
    tables: Vec<Table>,
}

impl Lake {
    /// Registers the lake's tables (partition columns `day` and `stream` included), unlimited.
    pub async fn open(location: &LakeLocation) -> Result<Self, QueryError> {
        Self::open_with(location, QueryLimits::default(), None).await
    }

    /// As [`Lake::open`], with every query run under `limits`, reading the tables `as_of` a
    /// version or time (the latest when `None`).
    pub async fn open_with(
        location: &LakeLocation,
        limits: QueryLimits,
        as_of: Option<AsOf>,
    ) -> Result<Self, QueryError> {
        crate::convert::refuse_old_layout(location)?;
        let ctx = session(&limits)?;
        let mut found = Vec::new();
        let mut props = std::collections::HashMap::new();
        for table in Table::ALL {
            // A table nothing was written to yet does not exist: leave it out.
            let Some(mut t) = open_table(location, table).await? else {
                continue;
            };
            match as_of {
                Some(AsOf::Version(v)) => {
                    let latest = t.version().unwrap_or(0) as i64;
                    if v < latest {
                        t.load_version(v.max(0) as u64)
                            .await
                            .map_err(|e| LakeError::store(location, table.name(), e))?
                    }
                }
                Some(AsOf::Time(ns)) => {
                    let at = chrono::DateTime::from_timestamp_nanos(ns);
                    t.load_with_datetime(at)
                        .await
                        .map_err(|e| LakeError::store(location, table.name(), e))?
                }
                None => {}
            }
            crate::tables::check_compatible(location, table, &properties(&t), None)?;
            props.insert(table, properties(&t));
            t.update_datafusion_session(&ctx.state())
                .map_err(|e| LakeError::store(location, table.name(), e))?;
            let provider = t.table_provider().await.map_err(|e| QueryError::Register {
                table: table.name().into(),
                reason: e.to_string(),
            })?;
            ctx.register_table(table.name(), provider)
                .map_err(|e| QueryError::Register {
                    table: table.name().into(),
                    reason: e.to_string(),
                })?;
            found.push(table);
        }
        if found.is_empty() {
            return Err(LakeError::NoLake {
                location: location.to_string(),
            }
            .into());
        }
        let format = props
            .get(&Table::Windows)
            .map(|w| LakeFormat::from_properties(w, props.get(&Table::Features)))
            .transpose()
            .map_err(|reason| LakeError::Incompatible {
                location: location.to_string(),
                table: "windows".into(),
                reason,
            })?;
        Ok(Self {
            ctx,
            limits,
            location: location.clone(),
            format,
            tables: found,
        })
    }

    /// What the lake's windows are (`None` before any window was written).
    pub fn format(&self) -> Option<&LakeFormat> {
        self.format.as_ref()
    }

    pub fn location(&self) -> &LakeLocation {
        &self.location
    }

    /// Whether `table` exists (was written to).
    pub fn has(&self, table: Table) -> bool {
        self.tables.contains(&table)
    }

    /// Runs one query and collects the result (all rows unless a row limit is set).
    pub async fn sql(&self, query: &str) -> Result<Vec<RecordBatch>, QueryError> {
        Ok(self.query(query).await?.batches)
    }

    /// Runs one read-only query under the session's limits.
    pub async fn query(&self, query: &str) -> Result<Answer, QueryError> {
        check_read_only(query)?;
        let run = self.run(query);
        match self.limits.timeout {
            Some(limit) => tokio::time::timeout(limit, run)
                .await
                .map_err(|_| QueryError::Timeout(limit))?,
            None => run.await,
        }
    }

    async fn run(&self, query: &str) -> Result<Answer, QueryError> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = self
            .ctx
            .sql_with_options(query, options)
            .await
            .map_err(|e| self.error(e))?;
        let stream = df.execute_stream().await.map_err(|e| self.error(e))?;
        let schema = stream.schema();
        let (batches, truncated) = self.collect(stream).await?;
        Ok(Answer {
            schema,
            batches,
            truncated,
        })
    }

    /// Pulls batches until the stream ends or the row limit is reached (dropping the stream
    /// cancels the rest of the plan).
    async fn collect(
        &self,
        mut stream: SendableRecordBatchStream,
    ) -> Result<(Vec<RecordBatch>, bool), QueryError> {
        let max = self.limits.max_rows.unwrap_or(usize::MAX);
        let mut batches = Vec::new();
        let mut rows = 0usize;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| self.error(e))?;
            if rows + batch.num_rows() > max {
                let keep = max - rows;
                if keep > 0 {
                    batches.push(batch.slice(0, keep));
                }
                return Ok((batches, true));
            }
            rows += batch.num_rows();
            batches.push(batch);
        }
        Ok((batches, false))
    }

    fn error(&self, e: DataFusionError) -> QueryError {
        match (e.find_root(), self.limits.memory_bytes) {
            (DataFusionError::ResourcesExhausted(reason), Some(limit)) => QueryError::Memory {
                limit_mib: limit.div_ceil(1 << 20),
                reason: reason.clone(),
            },
            (DataFusionError::Plan(reason), _)
                if reason.contains("not supported") && reason.contains("SQLOptions") =>
            {
                QueryError::Refused(reason.clone())
            }
            _ => QueryError::Sql(e.to_string()),
        }
    }

    /// Runs a query and renders it as an ASCII table (long lists abbreviated).
    pub async fn sql_table(&self, query: &str) -> Result<String, QueryError> {
        let answer = self.query(query).await?;
        let table = crate::answer::encode(
            &answer,
            crate::answer::AnswerFormat::Table,
            &Default::default(),
        )
        .map_err(|e| QueryError::Sql(e.to_string()))?;
        Ok(String::from_utf8_lossy(&table.bytes).trim_end().to_string())
    }
}

/// A session with the memory limit (and no spilling, so the limit is a limit) and without URL
/// tables, so `SELECT * FROM '/etc/passwd'` is just an unknown table.
fn session(limits: &QueryLimits) -> Result<SessionContext, QueryError> {
    let mut runtime = RuntimeEnvBuilder::new().with_disk_manager_builder(
        DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
    );
    if let Some(bytes) = limits.memory_bytes {
        runtime = runtime.with_memory_limit(bytes, 1.0);
    }
    let runtime = runtime
        .build_arc()
        .map_err(|e| QueryError::Sql(format!("query runtime: {e}")))?;
    Ok(SessionContext::new_with_config_rt(
        SessionConfig::new(),
        runtime,
    ))
}

/// Refuses anything but exactly one query (EXPLAIN of a query is a query), naming what was sent.
fn check_read_only(sql: &str) -> Result<(), QueryError> {
    let statements = DFParser::parse_sql(sql).map_err(|e| QueryError::Sql(e.to_string()))?;
    if statements.len() != 1 {
        return Err(QueryError::Refused(format!(
            "got {} statements; send one",
            statements.len()
        )));
    }
    match kind(&statements[0]) {
        None => Ok(()),
        Some(what) => Err(QueryError::Refused(format!("got {what}"))),
    }
}

/// `None` for a query (or EXPLAIN of one), else what the statement is.
fn kind(statement: &DfStatement) -> Option<String> {
    match statement {
        DfStatement::Statement(s) => match s.as_ref() {
            Statement::Query(_) => None,
            Statement::Explain { statement, .. } if matches!(**statement, Statement::Query(_)) => {
                None
            }
            other => Some(statement_kind(other)),
        },
        DfStatement::Explain(e) => kind(&e.statement).map(|k| format!("EXPLAIN of {k}")),
        DfStatement::CreateExternalTable(_) => Some("CREATE EXTERNAL TABLE".to_string()),
        DfStatement::CopyTo(_) => Some("COPY".to_string()),
        DfStatement::Reset(_) => Some("RESET".to_string()),
    }
}

/// The statement's leading keywords, e.g. `INSERT` or `CREATE VIEW`.
fn statement_kind(s: &Statement) -> String {
    let text = s.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    match words.as_slice() {
        [first, second] if matches!(*first, "CREATE" | "DROP" | "ALTER") => {
            format!("{first} {second}")
        }
        [first, ..] => first.to_string(),
        [] => "an empty statement".to_string(),
    }
}
