//! Just enough HTTP/1.1 for the API: one request per connection (`Connection: close`),
//! bodies by `Content-Length` only, hard limits on the head and the body. Anything else is
//! answered with a status and the connection closed; nothing here panics on input.

use std::io::{ErrorKind, Read, Write};
use std::time::Instant;

/// Largest request head (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Largest request body.
pub const MAX_BODY: usize = 64 * 1024;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string after `?` (empty when none).
    pub query: String,
    /// The body (empty when none).
    pub body: Vec<u8>,
}

/// A request that cannot be served: the status to answer with and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// HTTP status.
    pub status: u16,
    /// Short summary.
    pub error: &'static str,
    /// Details.
    pub detail: String,
}

/// What reading a request gave.
#[derive(Debug)]
pub enum ReadOutcome {
    /// A whole request.
    Request(Request),
    /// A request that must be refused with this error.
    Refuse(HttpError),
    /// The peer closed (or reset) the connection before sending a request: nothing to
    /// answer.
    Closed,
}

fn refuse(status: u16, error: &'static str, detail: impl Into<String>) -> ReadOutcome {
    ReadOutcome::Refuse(HttpError {
        status,
        error,
        detail: detail.into(),
    })
}

fn timeout() -> ReadOutcome {
    refuse(408, "request timeout", "the request did not arrive in time")
}

/// Reads into `buf` once; `Ok(0)` is end of stream. Timeouts come back as `TimedOut`.
fn read_some<S: Read>(s: &mut S, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                return Err(std::io::Error::new(ErrorKind::TimedOut, e))
            }
            r => return r,
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Reads one request from `s`, answering `Expect: 100-continue` on it. The caller sets the
/// socket's read timeout; `deadline` bounds the whole request (a client trickling bytes
/// is cut off with 408).
pub fn read_request<S: Read + Write>(s: &mut S, deadline: Option<Instant>) -> ReadOutcome {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return refuse(
                431,
                "request head too large",
                format!("the request line and headers exceed {MAX_HEAD} bytes"),
            );
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            return timeout();
        }
        match read_some(s, &mut chunk) {
            Ok(0) if buf.is_empty() => return ReadOutcome::Closed,
            Ok(0) => {
                return refuse(
                    400,
                    "malformed request",
                    "the connection closed before the end of the headers",
                )
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::TimedOut => return timeout(),
            Err(_) => return ReadOutcome::Closed,
        }
    };
    if head_end > MAX_HEAD {
        return refuse(
            431,
            "request head too large",
            format!("the request line and headers exceed {MAX_HEAD} bytes"),
        );
    }
    let head = match std::str::from_utf8(&buf[..head_end]) {
        Ok(h) => h,
        Err(_) => return refuse(400, "malformed request", "the request head is not UTF-8"),
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return refuse(
            400,
            "malformed request",
            format!("bad request line {request_line:?}"),
        );
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return refuse(400, "malformed request", format!("bad method {method:?}"));
    }
    if !target.starts_with('/') {
        return refuse(
            400,
            "malformed request",
            format!("bad request target {target:?}"),
        );
    }
    if *version != "HTTP/1.1" && *version != "HTTP/1.0" {
        return refuse(
            505,
            "HTTP version not supported",
            format!("{version:?}: use HTTP/1.1"),
        );
    }
    let mut content_length: Option<usize> = None;
    let mut expect_continue = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return refuse(
                400,
                "malformed request",
                format!("bad header line {line:?}"),
            );
        };
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return refuse(
                400,
                "malformed request",
                format!("bad header name {name:?}"),
            );
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let Ok(n) = value.parse::<usize>() else {
                return refuse(
                    400,
                    "malformed request",
                    format!("bad Content-Length {value:?}"),
                );
            };
            if content_length.is_some_and(|c| c != n) {
                return refuse(
                    400,
                    "malformed request",
                    "conflicting Content-Length headers",
                );
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return refuse(
                411,
                "length required",
                "chunked or other transfer encodings are not supported: send Content-Length",
            );
        } else if name.eq_ignore_ascii_case("expect") {
            if !value.eq_ignore_ascii_case("100-continue") {
                return refuse(
                    417,
                    "expectation failed",
                    format!("unsupported Expect: {value:?}"),
                );
            }
            expect_continue = true;
        }
    }
    let length = content_length.unwrap_or(0);
    if length > MAX_BODY {
        return refuse(
            413,
            "request body too large",
            format!("{length} bytes; the limit is {MAX_BODY}"),
        );
    }
    let mut body: Vec<u8> = buf[head_end + 4..].to_vec();
    if body.len() > length {
        return refuse(
            400,
            "malformed request",
            "more data than Content-Length (pipelining is not supported)",
        );
    }
    if expect_continue && body.len() < length {
        // The client waits for this before sending the body; a failed write shows up as
        // a short body below.
        let _ = s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    while body.len() < length {
        if deadline.is_some_and(|d| Instant::now() > d) {
            return timeout();
        }
        let want = (length - body.len()).min(chunk.len());
        match read_some(s, &mut chunk[..want]) {
            Ok(0) => {
                return refuse(
                    400,
                    "malformed request",
                    format!(
                        "the body ended after {} of {length} bytes (Content-Length)",
                        body.len()
                    ),
                )
            }
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::TimedOut => return timeout(),
            Err(_) => return ReadOutcome::Closed,
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.to_string(), String::new()),
    };
    ReadOutcome::Request(Request {
        method: method.to_string(),
        path,
        query,
        body,
    })
}

/// A response: status, optional JSON body, optional `Allow` header (405).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// JSON body (none for 204).
    pub body: Option<String>,
    /// Methods allowed on the path (for 405).
    pub allow: Option<String>,
}

/// The reason phrase of the statuses the API uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Writes `r` with `Connection: close`.
pub fn write_response<W: Write>(w: &mut W, r: &Response) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    out.push_str("Server: conduit\r\nConnection: close\r\n");
    if let Some(allow) = &r.allow {
        out.push_str(&format!("Allow: {allow}\r\n"));
    }
    match &r.body {
        Some(body) => {
            out.push_str("Content-Type: application/json\r\n");
            out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            out.push_str(body);
        }
        None if r.status == 204 => out.push_str("\r\n"),
        None => out.push_str("Content-Length: 0\r\n\r\n"),
    }
    w.write_all(out.as_bytes())?;
    w.flush()
}

/// A response parsed by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

/// Parses a whole response (read until the server closed), skipping `100 Continue`.
pub fn parse_response(mut raw: &[u8]) -> Option<ClientResponse> {
    loop {
        let end = find_head_end(raw)?;
        let head = std::str::from_utf8(&raw[..end]).ok()?;
        let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
        let rest = &raw[end + 4..];
        if status == 100 {
            raw = rest;
            continue;
        }
        let length = head.split("\r\n").skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        });
        let body = match length {
            Some(n) => rest.get(..n)?.to_vec(),
            None => rest.to_vec(),
        };
        return Some(ClientResponse { status, body });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A connection whose input is fixed and whose output is collected.
    struct Conn {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Conn {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Conn {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn read(raw: &[u8]) -> (ReadOutcome, Vec<u8>) {
        let mut c = Conn {
            input: Cursor::new(raw.to_vec()),
            output: Vec::new(),
        };
        let r = read_request(&mut c, None);
        (r, c.output)
    }

    fn status(raw: &[u8]) -> u16 {
        match read(raw).0 {
            ReadOutcome::Refuse(e) => e.status,
            ReadOutcome::Request(_) => 0,
            ReadOutcome::Closed => 1,
        }
    }

    #[test]
    fn parses_a_request_with_body_and_query() {
        let (r, out) = read(
            b"PUT /api/v1/vm.create?x=1 HTTP/1.1\r\nHost: localhost\r\ncontent-length: 4\r\n\r\n{\"a\"",
        );
        let ReadOutcome::Request(r) = r else {
            panic!("{r:?}")
        };
        assert_eq!(r.method, "PUT");
        assert_eq!(r.path, "/api/v1/vm.create");
        assert_eq!(r.query, "x=1");
        assert_eq!(r.body, b"{\"a\"");
        assert!(out.is_empty());
        let ReadOutcome::Request(r) = read(b"GET /api/v1/vmm.ping HTTP/1.0\r\n\r\n").0 else {
            panic!()
        };
        assert!(r.body.is_empty() && r.query.is_empty());
    }

    #[test]
    fn expect_continue_is_answered() {
        let (r, out) =
            read(b"PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}");
        assert!(matches!(r, ReadOutcome::Request(_)));
        // The body was already there: no 100 needed.
        assert!(out.is_empty());
        let mut c = Conn {
            input: Cursor::new(
                b"PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n".to_vec(),
            ),
            output: Vec::new(),
        };
        // The body never comes: 100 was sent, then the short body is refused.
        match read_request(&mut c, None) {
            ReadOutcome::Refuse(e) => assert_eq!(e.status, 400),
            r => panic!("{r:?}"),
        }
        assert!(c.output.starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"));
    }

    #[test]
    fn bad_requests_get_their_status() {
        assert_eq!(status(b""), 1);
        assert_eq!(status(b"GET / HTTP/1.1\r\n"), 400, "head not finished");
        assert_eq!(status(b"GET\r\n\r\n"), 400);
        assert_eq!(status(b"get / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET x HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/2\r\n\r\n"), 505);
        assert_eq!(status(b"GET / HTTP/1.1\r\nbad header\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nA b: c\r\n\r\n"), 400);
        assert_eq!(status(b"PUT / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
        assert_eq!(
            status(b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            411
        );
        assert_eq!(status(b"PUT / HTTP/1.1\r\nExpect: magic\r\n\r\n"), 417);
        assert_eq!(
            status(b"PUT / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"),
            400
        );
        assert_eq!(
            status(b"PUT / HTTP/1.1\r\nContent-Length: 1\r\n\r\nab"),
            400
        );
        assert_eq!(status(b"GET /\xff HTTP/1.1\r\n\r\n"), 400);
        let big = format!("PUT / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        assert_eq!(status(big.as_bytes()), 413);
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(status(long.as_bytes()), 431);
        let endless = "a".repeat(3 * MAX_HEAD);
        assert_eq!(status(endless.as_bytes()), 431);
    }

    #[test]
    fn deadline_cuts_off_slow_requests() {
        let mut c = Conn {
            input: Cursor::new(b"GET / HTTP/1.1\r\n".to_vec()),
            output: Vec::new(),
        };
        let past = Instant::now() - std::time::Duration::from_secs(1);
        match read_request(&mut c, Some(past)) {
            ReadOutcome::Refuse(e) => assert_eq!(e.status, 408),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn responses_round_trip() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            &Response {
                status: 405,
                body: Some("{\"error\":\"x\"}".into()),
                allow: Some("GET".into()),
            },
        )
        .unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("Allow: GET\r\n"));
        let r = parse_response(&out).unwrap();
        assert_eq!(r.status, 405);
        assert_eq!(r.body, b"{\"error\":\"x\"}");
        let mut out = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        write_response(
            &mut out,
            &Response {
                status: 204,
                body: None,
                allow: None,
            },
        )
        .unwrap();
        let r = parse_response(&out).unwrap();
        assert_eq!((r.status, r.body.len()), (204, 0));
        assert!(parse_response(b"garbage").is_none());
    }
}
