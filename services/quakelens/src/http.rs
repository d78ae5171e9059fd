//! A minimal HTTP/1.1 responder for probes, metrics and SQL: one request per connection, GET and
//! POST, headers up to 16 KiB, bodies up to 1 MiB. Enough for Prometheus and curl without a web
//! framework. A client that closes its connection before the answer cancels the work on it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1 << 20;
/// A client that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A response: status code, content type, extra headers, body.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type,
            headers: Vec::new(),
            body,
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::new(
            status,
            "text/plain; charset=utf-8",
            body.into().into_bytes(),
        )
    }

    /// The Prometheus text exposition format.
    pub fn prometheus(body: String) -> Self {
        Self::new(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            body.into_bytes(),
        )
    }

    pub fn json(body: &impl serde::Serialize) -> Self {
        Self::new(
            200,
            "application/json",
            serde_json::to_vec(body).unwrap_or_default(),
        )
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// Method, path, decoded query parameters, headers (names lower-cased) and body.
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match std::str::from_utf8(&bytes[i + 1..i + 3])
                .map_err(|_| ())
                .and_then(|h| u8::from_str_radix(h, 16).map_err(|_| ()))
            {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the request line and headers (everything before the blank line).
fn parse_head(head: &str) -> Result<Request, &'static str> {
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    let (method, target) = match (parts.next(), parts.next()) {
        (Some(m), Some(t)) => (m, t),
        _ => return Err("malformed request line"),
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        query,
        headers,
        body: Vec::new(),
    })
}

/// Reads one request; `Err` is the response to send instead.
async fn read_request(stream: &mut TcpStream) -> Result<Request, Response> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(Response::text(431, "request head over 16 KiB\n"));
        }
        match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => {
                return Err(Response::text(400, "incomplete request\n"))
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut req = parse_head(&head).map_err(|e| Response::text(400, format!("{e}\n")))?;
    if !matches!(req.method.as_str(), "GET" | "POST") {
        return Err(
            Response::text(405, "only GET and POST are served\n").header("Allow", "GET, POST")
        );
    }
    let length = match req.header("content-length") {
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| Response::text(400, "bad Content-Length\n"))?,
        None => 0,
    };
    if length > MAX_BODY {
        return Err(Response::text(413, "request body over 1 MiB\n"));
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => {
                return Err(Response::text(
                    400,
                    "request body shorter than Content-Length\n",
                ))
            }
            Ok(Ok(n)) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(length);
    req.body = body;
    Ok(req)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

async fn write_response(stream: &mut TcpStream, response: Response) {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    for (k, v) in &response.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&response.body).await;
    let _ = stream.shutdown().await;
}

/// Runs `work` unless the client closes the connection first (a read sees the end of the
/// stream): then `work` is dropped, which cancels whatever it was doing, and `None` is returned.
async fn until_gone<Fut: Future<Output = Response>>(
    stream: &mut TcpStream,
    work: Fut,
) -> Option<Response> {
    tokio::pin!(work);
    let mut probe = [0u8; 512];
    loop {
        tokio::select! {
            response = &mut work => return Some(response),
            read = stream.read(&mut probe) => match read {
                Ok(0) | Err(_) => return None,
                // Bytes after the request (a pipelining client): not ours to answer.
                Ok(_) => {}
            },
        }
    }
}

/// Binds `addr` and serves `handler` until the process ends; returns the bound address.
pub async fn serve<F, Fut>(addr: &str, handler: F) -> anyhow::Result<SocketAddr>
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send,
{
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                let response = match read_request(&mut stream).await {
                    Ok(req) => until_gone(&mut stream, handler(req)).await,
                    Err(refusal) => Some(refusal),
                };
                if let Some(response) = response {
                    write_response(&mut stream, response).await;
                }
            });
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_path_query_and_headers() {
        let r = parse_head(
            "GET /sql?q=SELECT+count%28%2A%29+FROM+windows&x HTTP/1.1\r\nAuthorization: Bearer abc\r\nAccept: text/csv",
        )
        .unwrap();
        assert_eq!(r.path, "/sql");
        assert_eq!(r.param("q"), Some("SELECT count(*) FROM windows"));
        assert_eq!(r.param("x"), Some(""));
        assert_eq!(r.header("authorization"), Some("Bearer abc"));
        assert_eq!(r.header("ACCEPT"), Some("text/csv"));
        assert!(parse_head("").is_err());
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[tokio::test]
    async fn serves_post_bodies_and_refuses_other_methods() {
        let addr = serve("127.0.0.1:0", |req: Request| async move {
            Response::text(
                200,
                format!("{} {}", req.method, String::from_utf8_lossy(&req.body)),
            )
        })
        .await
        .unwrap();
        let ask = |raw: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(raw.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let post = ask("POST /sql HTTP/1.1\r\nContent-Length: 8\r\n\r\nSELECT 1").await;
        assert!(
            post.starts_with("HTTP/1.1 200") && post.ends_with("POST SELECT 1"),
            "{post}"
        );
        let put = ask("PUT / HTTP/1.1\r\n\r\n").await;
        assert!(
            put.starts_with("HTTP/1.1 405") && put.contains("Allow: GET, POST"),
            "{put}"
        );
        let big = ask("POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n").await;
        assert!(big.starts_with("HTTP/1.1 413"), "{big}");
    }

    #[tokio::test]
    async fn a_client_that_leaves_cancels_its_request() {
        struct Dropped(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let gone = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&gone);
        let addr = serve("127.0.0.1:0", move |_req: Request| {
            let guard = Dropped(std::sync::Arc::clone(&flag));
            async move {
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(guard);
                Response::text(200, "late")
            }
        })
        .await
        .unwrap();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /sql?q=slow HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!gone.load(std::sync::atomic::Ordering::SeqCst));
        drop(s);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !gone.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(tokio::time::Instant::now() < deadline, "the request ran on");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
