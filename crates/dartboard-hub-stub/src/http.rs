//! Just enough HTTP/1.1 for the stub: request heads, request bodies (`Content-Length`
//! or `Transfer-Encoding: chunked`, as clients may send either), and responses.
//!
//! Every malformed input is an `io::ErrorKind::InvalidData` error (or a [`BodyError`]),
//! which the connection loop answers with 400 and a closed connection: a bad request
//! never panics a server thread. Lines and header counts are bounded so a client cannot
//! make the stub buffer without limit.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;

/// The longest request line or header line accepted.
const MAX_LINE: u64 = 64 * 1024;
/// The most header lines (or chunked trailer lines) accepted.
const MAX_HEADERS: usize = 256;
/// The largest chunk size a chunked body may announce (a typo'd size must not look
/// like a body to wait for).
const MAX_CHUNK: u64 = 1 << 40;

/// A request: its head, and its body once read.
pub(crate) struct Request {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The percent-decoded path.
    pub path: String,
    /// The raw query string (without `?`).
    pub query: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The body (empty until read).
    pub body: Vec<u8>,
}

impl Request {
    /// The value of a query parameter, if given (`key=value` or a bare `key`).
    pub fn query_param(&self, key: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| match pair.split_once('=') {
            Some((k, v)) if k == key => Some(percent_decode(v)),
            None if pair == key => Some(String::new()),
            _ => None,
        })
    }

    /// The bearer token, if any.
    pub fn token(&self) -> Option<&str> {
        self.headers.get("authorization").map(|h| h.strip_prefix("Bearer ").unwrap_or(h).trim())
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Reads one line (up to `\n`), at most [`MAX_LINE`] bytes; `None` at a clean end of stream.
fn read_line<R: BufRead>(reader: &mut R) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let n = reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(if n as u64 == MAX_LINE {
            invalid(format!("a line longer than {MAX_LINE} bytes"))
        } else {
            io::Error::new(io::ErrorKind::UnexpectedEof, "the stream ended in the middle of a line")
        });
    }
    String::from_utf8(line).map(Some).map_err(|_| invalid("a request line or header is not UTF-8"))
}

/// Reads a request head. `None` when the client closed the connection between requests.
pub(crate) fn read_head<R: BufRead>(reader: &mut R) -> io::Result<Option<Request>> {
    let Some(line) = read_line(reader)? else { return Ok(None) };
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(invalid(format!("malformed request line {:?}", line.trim_end())));
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut headers = BTreeMap::new();
    for _ in 0..=MAX_HEADERS {
        let h = read_line(reader)?.ok_or_else(|| invalid("the stream ended inside the request head"))?;
        if h == "\r\n" || h == "\n" {
            // A proxied request carries the absolute URL: serve it as the origin would,
            // which makes the stub usable as an HTTP proxy in tests.
            let target =
                match target.strip_prefix("http://").and_then(|rest| rest.find('/').map(|i| rest[i..].to_owned())) {
                    Some(path) => path,
                    None => target,
                };
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p.to_owned(), q.to_owned()),
                None => (target.clone(), String::new()),
            };
            return Ok(Some(Request { method, path: percent_decode(&path), query, headers, body: Vec::new() }));
        }
        match h.split_once(':') {
            Some((k, v)) => {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
            None => return Err(invalid(format!("malformed header line {:?}", h.trim_end()))),
        }
    }
    Err(invalid(format!("more than {MAX_HEADERS} header lines")))
}

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `Content-Length: n` (no header: 0, as for a request without a body).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// The body framing the headers announce; an error message for a request to refuse with 400.
pub(crate) fn framing(headers: &BTreeMap<String, String>) -> Result<Framing, String> {
    if let Some(te) = headers.get("transfer-encoding") {
        // RFC 9112: chunked must be the last coding, and then it wins over Content-Length.
        return if te.trim().eq_ignore_ascii_case("chunked") {
            Ok(Framing::Chunked)
        } else {
            Err(format!("unsupported Transfer-Encoding {te:?} (the stub reads only `chunked`)"))
        };
    }
    match headers.get("content-length") {
        Some(v) => v.trim().parse().map(Framing::Length).map_err(|_| format!("Content-Length {v:?} is not a number")),
        None => Ok(Framing::Length(0)),
    }
}

enum BodyState {
    /// Bytes left of a `Content-Length` body.
    Length(u64),
    /// Expecting a chunk-size line.
    ChunkStart,
    /// Bytes left in the current chunk (then its CRLF).
    Chunk(u64),
    Done,
}

/// Reads exactly one request body from the connection, decoding chunked transfer
/// coding; ends (`Ok(0)`) where the body ends, so the next request can follow.
pub(crate) struct BodyReader<'a, R> {
    inner: &'a mut R,
    state: BodyState,
}

impl<'a, R: BufRead> BodyReader<'a, R> {
    pub fn new(inner: &'a mut R, framing: Framing) -> Self {
        let state = match framing {
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::ChunkStart,
        };
        BodyReader { inner, state }
    }

    /// Whether the whole body has been read (the connection may serve another request).
    pub fn is_done(&self) -> bool {
        matches!(self.state, BodyState::Done | BodyState::Length(0))
    }

    fn read_data(&mut self, buf: &mut [u8], left: u64) -> io::Result<usize> {
        let max = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let got = self.inner.read(&mut buf[..max])?;
        if got == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the request body ended early"));
        }
        Ok(got)
    }
}

impl<R: BufRead> Read for BodyReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                BodyState::Done | BodyState::Length(0) => {
                    self.state = BodyState::Done;
                    return Ok(0);
                }
                BodyState::Length(left) => {
                    let got = self.read_data(buf, left)?;
                    self.state = BodyState::Length(left - got as u64);
                    return Ok(got);
                }
                BodyState::ChunkStart => {
                    let line = read_line(self.inner)?.ok_or_else(|| invalid("the chunked body ended early"))?;
                    let size = line.split(';').next().unwrap_or_default().trim();
                    let size = u64::from_str_radix(size, 16)
                        .ok()
                        .filter(|n| *n <= MAX_CHUNK && !size.starts_with('+'))
                        .ok_or_else(|| invalid(format!("malformed chunk size line {:?}", line.trim_end())))?;
                    if size == 0 {
                        // Trailers, up to the empty line that ends the body.
                        for _ in 0..=MAX_HEADERS {
                            let t = read_line(self.inner)?.ok_or_else(|| invalid("the chunked body ended early"))?;
                            if t == "\r\n" || t == "\n" {
                                self.state = BodyState::Done;
                                return Ok(0);
                            }
                        }
                        return Err(invalid("too many trailer lines"));
                    }
                    self.state = BodyState::Chunk(size);
                }
                BodyState::Chunk(0) => {
                    let end = read_line(self.inner)?.unwrap_or_default();
                    if end != "\r\n" && end != "\n" {
                        return Err(invalid("a chunk is longer than its size line says"));
                    }
                    self.state = BodyState::ChunkStart;
                }
                BodyState::Chunk(left) => {
                    let got = self.read_data(buf, left)?;
                    self.state = BodyState::Chunk(left - got as u64);
                    return Ok(got);
                }
            }
        }
    }
}

/// Why a body could not be read; both mean: answer 400/413 and close the connection.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Longer than the limit given to [`read_body`].
    TooLarge(u64),
    /// Malformed framing, a timeout or an early end.
    Io(io::Error),
}

/// Reads a whole body, refusing more than `limit` bytes.
pub(crate) fn read_body<R: BufRead>(reader: &mut R, framing: Framing, limit: u64) -> Result<Vec<u8>, BodyError> {
    if let Framing::Length(n) = framing {
        if n > limit {
            return Err(BodyError::TooLarge(limit));
        }
    }
    let mut body = Vec::new();
    BodyReader::new(reader, framing).take(limit + 1).read_to_end(&mut body).map_err(BodyError::Io)?;
    if body.len() as u64 > limit {
        return Err(BodyError::TooLarge(limit));
    }
    Ok(body)
}

pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    /// Close the connection after this response (its request body was not consumed).
    pub close: bool,
    /// Close the connection without answering at all (a reply lost on the way).
    pub hang_up: bool,
}

pub(crate) enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// A file slice; `corrupt` flips one byte, `drop_after` cuts the connection.
    File {
        bytes: Arc<Vec<u8>>,
        start: usize,
        end: usize,
        corrupt: bool,
        drop_after: Option<usize>,
    },
}

impl Response {
    pub fn new(status: u16) -> Self {
        Response { status, headers: Vec::new(), body: Body::Empty, close: false, hang_up: false }
    }

    pub fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_owned(), v.into()));
        self
    }

    pub fn json(value: serde_json::Value) -> Self {
        Response::new(200).header("Content-Type", "application/json").body(value.to_string().into_bytes())
    }

    pub fn body(mut self, bytes: Vec<u8>) -> Self {
        self.body = Body::Bytes(bytes);
        self
    }

    /// An error as the Hub sends it: `X-Error-Code` (when there is one), `X-Error-Message`
    /// and a JSON body `{"error": message}`.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        let mut r = Response::new(status);
        if !code.is_empty() {
            r = r.header("X-Error-Code", code);
        }
        // Header values cannot carry line breaks.
        r.header("X-Error-Message", message.replace(['\r', '\n'], " "))
            .header("Content-Type", "application/json")
            .body(serde_json::json!({ "error": message }).to_string().into_bytes())
    }

    /// A 400 without a Hub error code.
    pub fn bad_request(message: &str) -> Self {
        Response::error(400, "", message)
    }

    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    pub fn hang_up() -> Self {
        Response { hang_up: true, close: true, ..Response::new(0) }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        416 => "Range Not Satisfiable",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Writes `response`; returns whether the connection may serve another request.
pub(crate) fn write_response<W: Write>(w: &mut W, method: &str, response: Response) -> io::Result<bool> {
    if response.hang_up {
        return Ok(false);
    }
    let (bytes, cut) = match &response.body {
        Body::Empty => (Vec::new(), None),
        Body::Bytes(b) => (b.clone(), None),
        Body::File { bytes, start, end, corrupt, drop_after } => {
            let mut slice = bytes.get(*start..*end).unwrap_or_default().to_vec();
            if *corrupt && !slice.is_empty() {
                let mid = slice.len() / 2;
                slice[mid] ^= 0xff;
            }
            (slice, *drop_after)
        }
    };
    let mut head = format!("HTTP/1.1 {} {}\r\n", response.status, reason(response.status));
    for (k, v) in &response.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n", bytes.len()));
    head.push_str(if response.close { "Connection: close\r\n\r\n" } else { "Connection: keep-alive\r\n\r\n" });
    w.write_all(head.as_bytes())?;
    if method == "HEAD" {
        w.flush()?;
        return Ok(!response.close);
    }
    match cut {
        Some(n) if n < bytes.len() => {
            w.write_all(&bytes[..n])?;
            w.flush()?;
            Ok(false)
        }
        _ => {
            w.write_all(&bytes)?;
            w.flush()?;
            Ok(!response.close)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &[u8]) -> (Request, io::BufReader<&[u8]>) {
        let mut reader = io::BufReader::new(raw);
        let request = read_head(&mut reader).unwrap().unwrap();
        (request, reader)
    }

    fn body_of(raw: &[u8], limit: u64) -> (Result<Vec<u8>, BodyError>, Vec<u8>) {
        let (request, mut reader) = head(raw);
        let framing = framing(&request.headers).unwrap();
        let body = read_body(&mut reader, framing, limit);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        (body, rest)
    }

    #[test]
    fn content_length_body_is_read_and_the_next_request_left_alone() {
        let (body, rest) = body_of(b"PUT /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\n\r\n", 100);
        assert_eq!(body.unwrap(), b"hello");
        assert_eq!(rest, b"GET /next HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn no_body_headers_mean_an_empty_body() {
        let (body, rest) = body_of(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\nGET /y HTTP/1.1\r\n\r\n", 100);
        assert_eq!(body.unwrap(), b"");
        assert_eq!(rest, b"GET /y HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers_is_decoded() {
        let raw = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 999\r\n\r\n\
                    5;name=value\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let (body, rest) = body_of(raw, 100);
        assert_eq!(body.unwrap(), b"hello 0123456789");
        assert_eq!(rest, b"NEXT");
    }

    #[test]
    fn malformed_chunked_bodies_are_errors_not_panics() {
        for raw in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let (body, _) = body_of(raw, 100);
            assert!(matches!(body, Err(BodyError::Io(_))), "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn bodies_over_the_limit_are_refused_either_way() {
        let (body, _) = body_of(b"PUT / HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world", 10);
        assert!(matches!(body, Err(BodyError::TooLarge(10))));
        let (body, _) =
            body_of(b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n", 10);
        assert!(matches!(body, Err(BodyError::TooLarge(10))));
    }

    #[test]
    fn a_short_content_length_body_is_an_error() {
        let (body, _) = body_of(b"PUT / HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort", 100);
        assert!(matches!(body, Err(BodyError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof));
    }

    #[test]
    fn bad_framing_headers_are_refused() {
        let (request, _) = head(b"PUT / HTTP/1.1\r\nContent-Length: ten\r\n\r\n");
        assert!(framing(&request.headers).unwrap_err().contains("ten"));
        let (request, _) = head(b"PUT / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert!(framing(&request.headers).unwrap_err().contains("gzip"));
    }

    #[test]
    fn malformed_heads_are_invalid_data() {
        for raw in
            [&b"GARBAGE\r\n\r\n"[..], b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", b"GET / HTTP/1.1\r\nHost: a\r\n"]
        {
            let err = read_head(&mut io::BufReader::new(raw)).err().expect("an error");
            assert!(
                matches!(err.kind(), io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        assert!(read_head(&mut io::BufReader::new(&b""[..])).unwrap().is_none());
    }

    #[test]
    fn query_and_path_are_decoded() {
        let (request, _) =
            head(b"PUT /lfs-upload/org/a%20b?partNumber=3&x HTTP/1.1\r\nAuthorization: Bearer tok\r\n\r\n");
        assert_eq!(request.path, "/lfs-upload/org/a b");
        assert_eq!(request.query_param("partNumber").as_deref(), Some("3"));
        assert_eq!(request.query_param("x").as_deref(), Some(""));
        assert_eq!(request.query_param("y"), None);
        assert_eq!(request.token(), Some("tok"));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
