//! `quakelens query`: the SQL service. Read-only SQL over the lake via HTTP (`GET /sql?q=` or
//! `POST /sql` with the query as the body), answered as JSON, CSV, Arrow IPC or a text table,
//! under a time, memory and row limit, behind a bearer token when one is configured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use clap::Args;

use quakelens_lake::{Answer, Lake, LakeLocation, QueryError, QueryLimits};
use quakelens_pipeline::metrics::Metrics;

use super::serve::stop_on_signal;
use super::{parse_lake, runtime, DEFAULT_LAKE};
use crate::http::{serve, Request, Response};

#[derive(Args, Debug)]
pub struct QueryArgs {
    #[arg(long, env = "QUAKELENS_LAKE", default_value = DEFAULT_LAKE, value_parser = parse_lake)]
    lake: LakeLocation,
    /// Address to serve `/sql`, `/healthz` and `/metrics` on.
    #[arg(long, env = "QUAKELENS_LISTEN", default_value = "0.0.0.0:8081")]
    listen: String,
    /// Bearer token `/sql` requires (unset: no authentication; probes and metrics stay open).
    #[arg(long, env = "QUAKELENS_QUERY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Seconds a query may run.
    #[arg(long, env = "QUAKELENS_QUERY_TIMEOUT", default_value_t = 30.0)]
    timeout: f64,
    /// MiB of memory a query's operators may hold.
    #[arg(long, env = "QUAKELENS_QUERY_MEMORY_MIB", default_value_t = 512)]
    memory_mib: usize,
    /// Rows returned at most (the answer says when it was cut).
    #[arg(long, env = "QUAKELENS_QUERY_MAX_ROWS", default_value_t = 100_000)]
    max_rows: usize,
}

/// How an answer is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
    Arrow,
    Table,
}

impl Format {
    const ARROW_MIME: &'static str = "application/vnd.apache.arrow.stream";

    /// `?format=` wins; else the Accept header; else a text table (curl's `*/*`).
    fn of(req: &Request) -> Result<Self, String> {
        if let Some(f) = req.param("format") {
            return match f {
                "json" => Ok(Self::Json),
                "csv" => Ok(Self::Csv),
                "arrow" => Ok(Self::Arrow),
                "table" | "text" => Ok(Self::Table),
                other => Err(format!(
                    "unknown format {other:?}: use json, csv, arrow or table"
                )),
            };
        }
        let accept = req.header("accept").unwrap_or("*/*");
        Ok(if accept.contains("application/json") {
            Self::Json
        } else if accept.contains("text/csv") {
            Self::Csv
        } else if accept.contains(Self::ARROW_MIME) {
            Self::Arrow
        } else {
            Self::Table
        })
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Arrow => Self::ARROW_MIME,
            Self::Table => "text/plain; charset=utf-8",
        }
    }

    fn write(self, answer: &Answer) -> Result<Vec<u8>, arrow::error::ArrowError> {
        let batches: Vec<&RecordBatch> = answer.batches.iter().collect();
        match self {
            Self::Json => {
                let mut w = arrow::json::ArrayWriter::new(Vec::new());
                w.write_batches(&batches)?;
                w.finish()?;
                let mut out = w.into_inner();
                // An empty answer is an empty array, not an empty body.
                if out.is_empty() {
                    out.extend_from_slice(b"[]");
                }
                Ok(out)
            }
            Self::Csv => {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(Vec::new());
                for b in &batches {
                    w.write(b)?;
                }
                Ok(w.into_inner())
            }
            Self::Arrow => {
                let mut w = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &answer.schema)?;
                for b in &batches {
                    w.write(b)?;
                }
                w.finish()?;
                w.into_inner()
            }
            Self::Table => arrow::util::pretty::pretty_format_batches(&answer.batches)
                .map(|t| format!("{t}\n").into_bytes()),
        }
    }
}

/// The service's state: where the lake is, the limits, the token, the metrics.
struct SqlService {
    lake: LakeLocation,
    limits: QueryLimits,
    token: Option<String>,
    metrics: Arc<Metrics>,
}

/// Compares without an early exit, so timing does not reveal how much of a guess was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl SqlService {
    async fn respond(&self, req: Request) -> Response {
        match req.path.as_str() {
            "/healthz" | "/readyz" => Response::text(200, "ok\n"),
            "/metrics" => Response::prometheus(self.metrics.encode()),
            "/sql" => {
                let started = Instant::now();
                let (outcome, response) = self.sql(&req).await;
                self.metrics.query(outcome, started.elapsed().as_secs_f64());
                response
            }
            _ => Response::text(404, "not found: use /sql, /healthz or /metrics\n"),
        }
    }

    fn authorized(&self, req: &Request) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        req.header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| same_secret(given.trim().as_bytes(), token.as_bytes()))
    }

    /// Answers one `/sql` request; the first value is the outcome label for the metrics.
    async fn sql(&self, req: &Request) -> (&'static str, Response) {
        if !self.authorized(req) {
            return (
                "unauthorized",
                Response::text(
                    401,
                    "a valid bearer token is required (Authorization: Bearer …)\n",
                )
                .header("WWW-Authenticate", "Bearer realm=\"quakelens\""),
            );
        }
        let query = match (req.method.as_str(), req.param("q")) {
            (_, Some(q)) => q.to_string(),
            ("POST", None) if !req.body.is_empty() => {
                String::from_utf8_lossy(&req.body).into_owned()
            }
            _ => {
                return (
                    "error",
                    Response::text(400, "give the query as ?q=… or as the POST body\n"),
                )
            }
        };
        let format = match Format::of(req) {
            Ok(f) => f,
            Err(e) => return ("error", Response::text(406, format!("{e}\n"))),
        };
        let lake = match Lake::open_with(&self.lake, self.limits.clone(), None).await {
            Ok(l) => l,
            Err(e) => return ("error", Response::text(503, format!("{e}\n"))),
        };
        let answer = match lake.query(&query).await {
            Ok(a) => a,
            Err(e) => {
                let (outcome, status) = match e {
                    QueryError::Refused(_) => ("refused", 403),
                    QueryError::Timeout(_) => ("timeout", 504),
                    QueryError::Memory { .. } => ("memory", 422),
                    _ => ("error", 400),
                };
                tracing::info!(outcome, "query failed: {e}");
                return (outcome, Response::text(status, format!("{e}\n")));
            }
        };
        match format.write(&answer) {
            Ok(body) => {
                let mut r = Response::new(200, format.content_type(), body)
                    .header("X-Quakelens-Rows", answer.rows().to_string());
                if answer.truncated {
                    r = r.header("X-Quakelens-Truncated", "true");
                }
                ("ok", r)
            }
            Err(e) => (
                "error",
                Response::text(
                    406,
                    format!("the answer cannot be written as {format:?}: {e}; try format=json or arrow\n"),
                ),
            ),
        }
    }
}

pub fn run(args: QueryArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.timeout > 0.0,
        "--timeout must be positive, got {}",
        args.timeout
    );
    anyhow::ensure!(args.max_rows > 0, "--max-rows must be at least 1");
    let service = Arc::new(SqlService {
        lake: args.lake.clone(),
        limits: QueryLimits {
            timeout: Some(Duration::from_secs_f64(args.timeout)),
            memory_bytes: Some(args.memory_mib.max(1) << 20),
            max_rows: Some(args.max_rows),
        },
        token: args.token.clone().filter(|t| !t.is_empty()),
        metrics: Metrics::new(),
    });
    runtime()?.block_on(async {
        let mut stop = stop_on_signal();
        let bound = serve(&args.listen, move |req: Request| {
            let service = Arc::clone(&service);
            async move { service.respond(req).await }
        })
        .await?;
        eprintln!("query: SQL on http://{bound}/sql?q=...");
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &[(&str, &str)], headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            path: "/sql".into(),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
        }
    }

    #[test]
    fn format_from_parameter_then_accept_header() {
        assert_eq!(
            Format::of(&request(&[("format", "csv")], &[])),
            Ok(Format::Csv)
        );
        assert_eq!(
            Format::of(&request(&[], &[("accept", "application/json")])),
            Ok(Format::Json)
        );
        assert_eq!(
            Format::of(&request(&[], &[("accept", Format::ARROW_MIME)])),
            Ok(Format::Arrow)
        );
        assert_eq!(Format::of(&request(&[], &[])), Ok(Format::Table));
        assert!(Format::of(&request(&[("format", "xml")], &[])).is_err());
    }

    #[test]
    fn token_comparison() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cret", b"s3cres"));
        assert!(!same_secret(b"s3cret", b"s3cre"));
    }
}
