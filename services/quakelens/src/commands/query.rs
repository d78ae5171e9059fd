//! `quakelens query`: the SQL service. Read-only SQL over the lake via HTTP (`GET /sql?q=` or
//! `POST /sql` with the query as the body), answered as a text table, CSV, JSON, Arrow IPC or
//! Parquet, under a time limit that covers the whole answer, a memory, a row and a byte limit,
//! behind a bearer token when one is configured. A client that goes away cancels its query;
//! SIGTERM gives running queries a grace period, then cancels them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use quakelens_lake::{
    encode, AnswerFormat, EncodeError, EncodeLimits, Lake, LakeLocation, QueryError, QueryLimits,
};
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
    /// MiB an answer may hold once written (whole rows; the answer says when it was cut).
    #[arg(long, env = "QUAKELENS_QUERY_MAX_BYTES_MIB", default_value_t = 64)]
    max_bytes_mib: usize,
    /// Seconds running queries get to finish after SIGTERM before they are cancelled.
    #[arg(long, env = "QUAKELENS_QUERY_SHUTDOWN_GRACE", default_value_t = 5.0)]
    shutdown_grace: f64,
}

/// The answer's format: `?format=` wins; else the Accept header; else a text table (curl's
/// `*/*`).
fn format_of(req: &Request) -> Result<AnswerFormat, String> {
    if let Some(f) = req.param("format") {
        return f.parse();
    }
    let accept = req.header("accept").unwrap_or("*/*");
    Ok(AnswerFormat::ALL
        .into_iter()
        .filter(|f| *f != AnswerFormat::Table)
        .find(|f| {
            let mime = f.content_type();
            accept.contains(mime.split(';').next().unwrap_or(mime))
        })
        .unwrap_or(AnswerFormat::Table))
}

/// Sets its flag when dropped: a request given up (timed out, client gone, shutdown) stops
/// the encoding it started on a blocking thread.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Counts a request as in flight while it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The service's state: where the lake is, the limits, the token, the metrics.
struct SqlService {
    lake: LakeLocation,
    limits: QueryLimits,
    /// The whole answer's time: planning, execution and writing.
    timeout: Duration,
    max_bytes: usize,
    token: Option<String>,
    metrics: Arc<Metrics>,
    in_flight: AtomicUsize,
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
                let _counted = InFlight::enter(&self.in_flight);
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
        let format = match format_of(req) {
            Ok(f) => f,
            Err(e) => return ("error", Response::text(406, format!("{e}\n"))),
        };
        let started = Instant::now();
        let deadline = started + self.timeout;
        let timed_out = || {
            tracing::info!(outcome = "timeout", "query past {:?}", self.timeout);
            (
                "timeout",
                Response::text(
                    504,
                    format!(
                        "the query and its answer took longer than {:?}\n",
                        self.timeout
                    ),
                ),
            )
        };
        let answer = tokio::time::timeout(self.timeout, async {
            let lake = Lake::open_with(&self.lake, self.limits.clone(), None).await?;
            lake.query(&query).await
        })
        .await;
        let answer = match answer {
            Err(_) => return timed_out(),
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                let (outcome, status) = match e {
                    QueryError::Refused(_) => ("refused", 403),
                    QueryError::Timeout(_) => return timed_out(),
                    QueryError::Memory { .. } => ("memory", 422),
                    QueryError::Lake(_) => ("error", 503),
                    _ => ("error", 400),
                };
                tracing::info!(outcome, "query failed: {e}");
                return (outcome, Response::text(status, format!("{e}\n")));
            }
        };
        // Writing is CPU work: on a blocking thread, in chunks that check the deadline and the
        // flag this request sets when it is dropped.
        let cancel = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(Arc::clone(&cancel));
        let limits = EncodeLimits {
            max_bytes: Some(self.max_bytes),
            deadline: Some(deadline),
            cancel: Some(cancel),
        };
        let written = tokio::task::spawn_blocking(move || encode(&answer, format, &limits));
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, written).await {
            Err(_) | Ok(Ok(Err(EncodeError::Timeout))) => timed_out(),
            Ok(Ok(Ok(e))) => {
                let mut r = Response::new(200, format.content_type(), e.bytes)
                    .header("X-Quakelens-Rows", e.rows.to_string());
                if e.truncated {
                    r = r.header("X-Quakelens-Truncated", "true");
                }
                ("ok", r)
            }
            Ok(Ok(Err(e @ EncodeError::Format { .. }))) => (
                "error",
                Response::text(406, format!("{e}; try format=json or arrow\n")),
            ),
            Ok(Ok(Err(EncodeError::Cancelled))) => {
                ("error", Response::text(503, "the service is stopping\n"))
            }
            Ok(Err(join)) => (
                "error",
                Response::text(500, format!("writing the answer failed: {join}\n")),
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
    anyhow::ensure!(args.max_bytes_mib > 0, "--max-bytes-mib must be at least 1");
    anyhow::ensure!(
        args.shutdown_grace >= 0.0,
        "--shutdown-grace must not be negative"
    );
    let timeout = Duration::from_secs_f64(args.timeout);
    let service = Arc::new(SqlService {
        lake: args.lake.clone(),
        limits: QueryLimits {
            timeout: Some(timeout),
            memory_bytes: Some(args.memory_mib.max(1) << 20),
            max_rows: Some(args.max_rows),
        },
        timeout,
        max_bytes: args.max_bytes_mib << 20,
        token: args.token.clone().filter(|t| !t.is_empty()),
        metrics: Metrics::new(),
        in_flight: AtomicUsize::new(0),
    });
    let rt = runtime()?;
    let served = Arc::clone(&service);
    let result = rt.block_on(async {
        let mut stop = stop_on_signal();
        let bound = serve(&args.listen, move |req: Request| {
            let service = Arc::clone(&served);
            async move { service.respond(req).await }
        })
        .await?;
        eprintln!("query: SQL on http://{bound}/sql?q=...");
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
        // Queries in flight get the grace period to finish, then are cancelled.
        let grace = Duration::from_secs_f64(args.shutdown_grace);
        let until = Instant::now() + grace;
        while service.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = service.in_flight.load(Ordering::SeqCst);
        if left > 0 {
            tracing::warn!(
                queries = left,
                "stopping: cancelling queries still running after {grace:?}"
            );
        }
        anyhow::Ok(())
    });
    // Dropping the tasks cancels their plans and flags their encoders; blocking threads get a
    // moment to see the flag.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
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
        let f = |q: &[(&str, &str)], h: &[(&str, &str)]| format_of(&request(q, h));
        assert_eq!(f(&[("format", "csv")], &[]), Ok(AnswerFormat::Csv));
        assert_eq!(f(&[("format", "parquet")], &[]), Ok(AnswerFormat::Parquet));
        assert_eq!(
            f(&[], &[("accept", "application/json")]),
            Ok(AnswerFormat::Json)
        );
        assert_eq!(
            f(&[], &[("accept", "application/vnd.apache.arrow.stream")]),
            Ok(AnswerFormat::Arrow)
        );
        assert_eq!(f(&[], &[("accept", "text/csv")]), Ok(AnswerFormat::Csv));
        assert_eq!(f(&[], &[]), Ok(AnswerFormat::Table));
        assert!(f(&[("format", "xml")], &[]).is_err());
    }

    #[test]
    fn token_comparison() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cret", b"s3cres"));
        assert!(!same_secret(b"s3cret", b"s3cre"));
    }
}
