//! HTTP/1.1 message framing for the ingress (RFC 9112): request and response heads parsed and
//! rewritten for the next hop, and bodies passed on as they come, without decoding them.
//!
//! A proxy that is not strict about where a message ends lets one request hide inside
//! another (request smuggling), so the rules here are the strict ones:
//!
//! - a request with both `Transfer-Encoding` and `Content-Length`, with more than one
//!   Content-Length (even equal ones), with a Content-Length that is not a number, or whose
//!   transfer codings do not end in one `chunked`, is refused (400); a coding before it that
//!   is not gzip, deflate or compress gets 501;
//! - malformed heads (obs-fold, a bare CR, whitespace before a colon) are refused (400), as
//!   are an absolute-form target with user info or no host, and a Host with user info;
//! - framing is decided from the headers as received, and the next hop gets it as one field
//!   written here (`Content-Length: N` or the codings), with the Host routed on (an
//!   absolute-form target's authority replaces any Host, RFC 9112 section 3.2.2): no
//!   `Connection` token takes off Content-Length, Transfer-Encoding or Host;
//! - chunk-size lines and trailers must end in CRLF; a chunk size has at most 16 hex digits,
//!   followed only by blanks and well-formed extensions (tokens, `=`, quoted strings);
//! - a response's body ends by its `Transfer-Encoding: chunked`, its `Content-Length`, or the
//!   end of the connection; answers to HEAD, 1xx, 204 and 304 have none; a response with
//!   both framings, or one that ends with the connection, leaves its connection unreused.
//!
//! Hop-by-hop headers (`Connection` and the ones it names, `Keep-Alive`, `Proxy-Connection`,
//! `TE`, `Trailer`, `Upgrade`, `Proxy-Authenticate`, `Proxy-Authorization`) stay on their hop,
//! except that an upgrade (WebSocket) is asked for again on the next; an upgrade to `h2c` is
//! not (it would tunnel past the routing).

use std::io::{self, Write as _};
use std::net::IpAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest request or response head taken.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in one head.
const MAX_HEADERS: usize = 128;
/// How much is read at a time.
const READ_CHUNK: usize = 16 * 1024;
/// The longest chunk-size line or trailer field line.
const MAX_LINE: usize = 4096;

/// Bytes read from a connection and not used yet.
#[derive(Debug)]
pub(crate) struct Buf {
    data: Vec<u8>,
    start: usize,
}

impl Buf {
    pub(crate) fn new() -> Buf {
        Buf {
            data: Vec::with_capacity(READ_CHUNK),
            start: 0,
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.data[self.start..]
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.data.len()
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.data.len() {
            self.data.clear();
            self.start = 0;
        }
    }

    /// Reads what `from` has (at least one byte, or 0 at its end).
    pub(crate) async fn fill<R: AsyncRead + Unpin>(&mut self, from: &mut R) -> io::Result<usize> {
        if self.start > 0 {
            self.data.drain(..self.start);
            self.start = 0;
        }
        if self.data.capacity() - self.data.len() < READ_CHUNK / 4 {
            self.data.reserve(READ_CHUNK);
        }
        from.read_buf(&mut self.data).await
    }
}

/// How a message's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// There is none.
    Empty,
    /// After this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`: at the last chunk and its trailers.
    Chunked,
    /// At the end of the connection (responses only).
    Close,
}

/// A head that cannot be passed on: the status to answer with, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: u16,
    pub why: &'static str,
}

fn refuse(status: u16, why: &'static str) -> Refusal {
    Refusal { status, why }
}

/// A request head, as parsed; its head for the endpoint is written to the caller's buffer.
#[derive(Debug)]
pub(crate) struct RequestHead {
    /// Bytes of the head in the input.
    pub len: usize,
    /// The host asked for: lower case, without port or final dot.
    pub host: String,
    /// Where the path (without the query) is in the head written for the endpoint.
    pub path: std::ops::Range<usize>,
    pub head_method: bool,
    /// Sending it twice does what sending it once does (RFC 9110 section 9.2.2).
    pub idempotent: bool,
    pub framing: Framing,
    /// The client's connection may carry another request after this one.
    pub keep_alive: bool,
    /// An HTTP/1.0 request (sent on as one, so the endpoint closes after answering).
    pub http10: bool,
    /// The client asks to switch protocols (`Upgrade`), in which case the head asks the same.
    pub upgrade: bool,
}

/// The tokens of `Connection` header values, lower case.
fn connection_tokens<'a>(headers: &'a [httparse::Header<'a>]) -> impl Iterator<Item = String> + 'a {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|b| *b == b','))
        .map(|t| String::from_utf8_lossy(t.trim_ascii()).to_ascii_lowercase())
        .filter(|t| !t.is_empty())
}

/// Always hop-by-hop (RFC 9110 section 7.6.1), besides those `Connection` names.
fn hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Adds an item to a comma-separated list.
fn append_item(list: &mut Vec<u8>, item: impl FnOnce(&mut Vec<u8>)) {
    if !list.is_empty() {
        list.extend_from_slice(b", ");
    }
    item(list);
}

fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The framing headers of a head, as received: the transfer codings (when there is a
/// `Transfer-Encoding`) and the Content-Length.
struct Lengths<'a> {
    te: Option<Vec<&'a [u8]>>,
    /// Ok when every value (each item of each field) is the same number of digits.
    cl: Option<Result<u64, ()>>,
    /// How many Content-Length values there are (items of all the fields).
    cl_values: usize,
}

impl Lengths<'_> {
    fn chunked(&self) -> bool {
        self.te
            .as_ref()
            .and_then(|c| c.last())
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
    }

    /// The framing headers for the next hop: the codings or the length as they were taken,
    /// as one field.
    fn put(&self, out: &mut Vec<u8>) {
        if let Some(codings) = &self.te {
            out.extend_from_slice(b"Transfer-Encoding: ");
            for (i, c) in codings.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(c);
            }
            out.extend_from_slice(b"\r\n");
        } else if let Some(Ok(n)) = self.cl {
            let _ = write!(out, "Content-Length: {n}\r\n");
        }
    }
}

/// Whether a header field is one that framing or routing depends on, so that no `Connection`
/// token may take it off (RFC 9112 section 9.6 lets it name only hop-by-hop fields).
fn framing_field(name: &str) -> bool {
    ["content-length", "transfer-encoding", "host"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

fn lengths<'a>(headers: &[httparse::Header<'a>]) -> Lengths<'a> {
    let mut te: Option<Vec<&'a [u8]>> = None;
    let mut cl: Option<Result<u64, ()>> = None;
    let mut cl_values = 0;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Empty list items do not count (RFC 9110 section 5.6.1).
            te.get_or_insert_with(Vec::new).extend(
                h.value
                    .split(|b| *b == b',')
                    .map(<[u8]>::trim_ascii)
                    .filter(|c| !c.is_empty()),
            );
        } else if h.name.eq_ignore_ascii_case("content-length") {
            for part in h.value.split(|b| *b == b',') {
                cl_values += 1;
                let part = part.trim_ascii();
                let n =
                    (!part.is_empty() && part.len() <= 19 && part.iter().all(u8::is_ascii_digit))
                        .then(|| std::str::from_utf8(part).ok()?.parse::<u64>().ok())
                        .flatten();
                cl = Some(match (cl, n) {
                    (None, Some(n)) => Ok(n),
                    (Some(Ok(a)), Some(n)) if a == n => Ok(n),
                    _ => Err(()),
                });
            }
        }
    }
    Lengths { te, cl, cl_values }
}

/// Transfer codings a request may have before its final `chunked` (RFC 9110 section 8.4.1,
/// RFC 9112 section 7); the body passes on still coded, so they need only be known.
const KNOWN_CODINGS: [&str; 5] = ["gzip", "x-gzip", "deflate", "compress", "x-compress"];

/// Checks a request's transfer codings: known ones, then `chunked` once, last.
fn request_codings(codings: &[&[u8]]) -> Result<(), Refusal> {
    let Some((last, before)) = codings.split_last() else {
        return Err(refuse(400, "the Transfer-Encoding is empty"));
    };
    if !last.eq_ignore_ascii_case(b"chunked") {
        return Err(refuse(
            400,
            "the request's last transfer coding is not chunked",
        ));
    }
    for c in before {
        if c.eq_ignore_ascii_case(b"chunked") {
            return Err(refuse(400, "the request is chunked more than once"));
        }
        if !KNOWN_CODINGS
            .iter()
            .any(|k| c.eq_ignore_ascii_case(k.as_bytes()))
        {
            return Err(refuse(
                501,
                "the request has a transfer coding not implemented here",
            ));
        }
    }
    Ok(())
}

/// The host part of a Host value or authority: without port or final dot, lower case; None
/// when it has user info, or characters a host cannot have.
fn bare_host(authority: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(authority).ok()?.trim();
    let digits = |port: &str| port.bytes().all(|b| b.is_ascii_digit());
    let host = if s.starts_with('[') {
        // An IPv6 literal, with its brackets, and nothing after them but a port.
        let end = s.find(']')? + 1;
        let rest = &s[end..];
        (rest.is_empty() || rest.strip_prefix(':').is_some_and(digits)).then_some(&s[..end])?
    } else {
        s.rsplit_once(':')
            .filter(|(_, port)| digits(port))
            .map_or(s, |(h, _)| h)
    };
    let host = host.trim_end_matches('.');
    host.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=[]:%".contains(&b))
        .then(|| host.to_ascii_lowercase())
}

/// Parses the request head at the start of `input` and writes the head to send the endpoint
/// to `out`: hop-by-hop headers dropped, and `X-Forwarded-For` (appended), `X-Forwarded-Host`,
/// `X-Forwarded-Proto`, `X-Real-IP` and `Forwarded` (RFC 7239, appended) naming `client`.
/// None: the head is not complete yet.
pub(crate) fn parse_request(
    input: &[u8],
    client: IpAddr,
    out: &mut Vec<u8>,
) -> Result<Option<RequestHead>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if input.len() > MAX_HEAD => {
            return Err(refuse(431, "the request head is too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(431, "the request has too many header fields"));
        }
        Err(httparse::Error::Version) => {
            return Err(refuse(505, "only HTTP/1.0 and HTTP/1.1 are served"));
        }
        Err(_) => return Err(refuse(400, "the request head is malformed")),
    };
    if len > MAX_HEAD {
        return Err(refuse(431, "the request head is too large"));
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(refuse(400, "the request head is malformed"));
    };
    if method == "CONNECT" {
        return Err(refuse(405, "CONNECT is not served"));
    }
    let headers = req.headers;

    // The target: origin form, or absolute form (whose authority is the host).
    // An absolute-form target's authority replaces any Host (RFC 9112 section 3.2.2).
    let absolute = target
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
        .map(|_| &target[7..]);
    let (authority, target) = match absolute {
        Some(rest) => {
            let at = rest.find(['/', '?']).unwrap_or(rest.len());
            let path = &rest[at..];
            if at == 0 {
                return Err(refuse(400, "the request target has no host"));
            }
            (Some(&rest[..at]), if path.is_empty() { "/" } else { path })
        }
        None if target.starts_with('/') || (target == "*" && method == "OPTIONS") => (None, target),
        None => return Err(refuse(400, "the request target is not a path")),
    };
    let mut host_values = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| h.value);
    let host_header = host_values.next();
    if host_values.next().is_some() {
        return Err(refuse(400, "the request has more than one Host"));
    }
    if version == 1 && host_header.is_none() && authority.is_none() {
        return Err(refuse(400, "an HTTP/1.1 request must have a Host"));
    }
    let sends_host = authority.is_some() || host_header.is_some();
    let authority: &[u8] = match authority {
        Some(a) => a.as_bytes(),
        None => host_header.unwrap_or_default(),
    };
    let host = bare_host(authority).ok_or(refuse(400, "the Host is malformed"))?;

    let lengths = lengths(headers);
    let framing = match (&lengths.te, lengths.cl) {
        (Some(_), _) if version == 0 => {
            return Err(refuse(400, "HTTP/1.0 has no Transfer-Encoding"));
        }
        (Some(_), Some(_)) => {
            return Err(refuse(
                400,
                "the request has both Transfer-Encoding and Content-Length",
            ));
        }
        (Some(codings), None) => {
            request_codings(codings)?;
            Framing::Chunked
        }
        (None, Some(_)) if lengths.cl_values > 1 => {
            return Err(refuse(400, "the request has more than one Content-Length"));
        }
        (None, Some(Err(()))) => return Err(refuse(400, "the Content-Length is not valid")),
        (None, Some(Ok(0))) | (None, None) => Framing::Empty,
        (None, Some(Ok(n))) => Framing::Length(n),
    };

    let tokens: Vec<String> = connection_tokens(headers).collect();
    let upgrade_to = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
        .map(|h| h.value)
        .filter(|_| version == 1 && tokens.iter().any(|t| t == "upgrade"))
        // HTTP/2 over cleartext would make the rest of the connection a tunnel to the
        // endpoint past the routing (h2c smuggling): that upgrade is not asked for.
        .filter(|v| {
            !v.split(|b| *b == b',')
                .any(|p| p.trim_ascii().eq_ignore_ascii_case(b"h2c"))
        });
    let keep_alive = version == 1 && !tokens.iter().any(|t| t == "close");

    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    let path_start = out.len();
    out.extend_from_slice(target.as_bytes());
    let path = path_start..path_start + target.find('?').unwrap_or(target.len());
    out.extend_from_slice(if version == 1 {
        b" HTTP/1.1\r\n"
    } else {
        b" HTTP/1.0\r\n"
    });
    // Host and the framing are written as they were taken, whatever else came.
    if sends_host {
        put_header(out, b"Host", authority.trim_ascii());
    }
    lengths.put(out);
    let mut xff: Vec<u8> = Vec::new();
    let mut forwarded: Vec<u8> = Vec::new();
    for h in headers.iter() {
        let name = h.name;
        let replaced = ["x-forwarded-host", "x-forwarded-proto", "x-real-ip"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n));
        if hop_by_hop(name)
            || replaced
            || framing_field(name)
            || tokens.iter().any(|t| name.eq_ignore_ascii_case(t))
        {
            continue;
        }
        let list = if name.eq_ignore_ascii_case("x-forwarded-for") {
            &mut xff
        } else if name.eq_ignore_ascii_case("forwarded") {
            &mut forwarded
        } else {
            put_header(out, name.as_bytes(), h.value);
            continue;
        };
        if !h.value.trim_ascii().is_empty() {
            append_item(list, |l| l.extend_from_slice(h.value.trim_ascii()));
        }
    }
    if let Some(u) = upgrade_to {
        put_header(out, b"Connection", b"upgrade");
        put_header(out, b"Upgrade", u);
    }
    // Written in place: the client's address goes straight into the head.
    append_item(&mut xff, |l| {
        let _ = write!(l, "{client}");
    });
    put_header(out, b"X-Forwarded-For", &xff);
    put_header(out, b"X-Forwarded-Host", authority.trim_ascii());
    put_header(out, b"X-Forwarded-Proto", b"http");
    let _ = write!(out, "X-Real-IP: {client}\r\n");
    append_item(&mut forwarded, |l| {
        let _ = match client {
            IpAddr::V4(_) => write!(l, "for={client};host=\""),
            IpAddr::V6(_) => write!(l, "for=\"[{client}]\";host=\""),
        };
        l.extend(
            authority
                .trim_ascii()
                .iter()
                .filter(|b| **b != b'"' && **b != b'\\'),
        );
        l.extend_from_slice(b"\";proto=http");
    });
    put_header(out, b"Forwarded", &forwarded);
    out.extend_from_slice(b"\r\n");
    Ok(Some(RequestHead {
        len,
        host,
        path,
        head_method: method == "HEAD",
        idempotent: ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"].contains(&method),
        framing,
        keep_alive,
        http10: version == 0,
        upgrade: upgrade_to.is_some(),
    }))
}

/// A response head, as parsed; its head for the client is written to the caller's buffer.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    /// Bytes of the head in the input.
    pub len: usize,
    pub status: u16,
    pub framing: Framing,
    /// The endpoint's connection may carry another request.
    pub reusable: bool,
}

/// Parses the response head at the start of `input` (the answer to a HEAD request when
/// `head_method`) and writes the head to send the client to `out`, with `Connection: close`
/// when `close` (or when the body ends with the connection). None: not complete yet.
pub(crate) fn parse_response(
    input: &[u8],
    head_method: bool,
    close: bool,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(input) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Partial) if input.len() <= MAX_HEAD => return Ok(None),
        Ok(_) => return Err("the response head is too large"),
        Err(_) => return Err("the response head is malformed"),
    };
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Err("the response head is malformed");
    };
    let headers = resp.headers;
    let lengths = lengths(headers);
    let framing = if head_method || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (&lengths.te, lengths.cl) {
            (Some(_), _) if lengths.chunked() => Framing::Chunked,
            (Some(_), _) => Framing::Close,
            (None, Some(Err(()))) => return Err("the response's Content-Length is not valid"),
            (None, Some(Ok(n))) if n > 0 => Framing::Length(n),
            (None, Some(Ok(_))) => Framing::Empty,
            (None, None) => Framing::Close,
        }
    };
    let tokens: Vec<String> = connection_tokens(headers).collect();
    // Both framings (chunked wins, RFC 9112 section 6.3) leave the endpoint's idea of where
    // the response ended in doubt, so its connection goes after this response.
    let both = lengths.te.is_some() && lengths.cl.is_some();
    let reusable =
        version == 1 && framing != Framing::Close && !both && !tokens.iter().any(|t| t == "close");
    let upgrade = (status == 101)
        .then(|| {
            headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
        })
        .flatten();

    let _ = write!(out, "HTTP/1.1 {status} ");
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // The framing as it was taken: a Content-Length beside a Transfer-Encoding is dropped
    // (RFC 9112 section 6.3), and no Connection token takes either off.
    lengths.put(out);
    for h in headers.iter() {
        let framing_field = h.name.eq_ignore_ascii_case("content-length")
            || h.name.eq_ignore_ascii_case("transfer-encoding");
        if hop_by_hop(h.name)
            || framing_field
            || tokens.iter().any(|t| h.name.eq_ignore_ascii_case(t))
        {
            continue;
        }
        put_header(out, h.name.as_bytes(), h.value);
    }
    if let Some(u) = upgrade {
        put_header(out, b"Connection", b"upgrade");
        put_header(out, b"Upgrade", u.value);
    } else if close || framing == Framing::Close {
        put_header(out, b"Connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(ResponseHead {
        len,
        status,
        framing,
        reusable,
    }))
}

/// Where a chunked body is (RFC 9112 section 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// In a chunk-size line: the size so far, its digits, and where in what follows them.
    Size {
        size: u64,
        digits: u8,
        ext: Ext,
    },
    /// After the CR of a chunk-size line.
    SizeLf {
        size: u64,
    },
    /// In chunk data, with this much left.
    Data(u64),
    DataCr,
    DataLf,
    /// In the trailer section: the length of the current line.
    Trailer(usize),
    /// After the CR of a trailer line (empty or not).
    TrailerLf {
        empty: bool,
    },
    Done,
}

/// Where a chunk-size line is after its digits (RFC 9112 section 7.1.1):
/// `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ext {
    /// Still in the digits.
    No,
    /// Blanks after the digits: only more, a `;` or the end may follow.
    Blank,
    /// In the extensions, outside quotes.
    In,
    /// In a quoted string.
    Quoted,
    /// After a backslash in a quoted string.
    Escaped,
}

/// A token character (RFC 9110 section 5.6.2).
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What a quoted string may hold (qdtext and quoted-pair's second byte, with obs-text).
fn qchar(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// How far one body has gone.
#[derive(Debug, Clone)]
pub(crate) struct Body {
    framing: Framing,
    left: u64,
    chunk: Chunk,
    line: usize,
}

impl Body {
    pub(crate) fn new(framing: Framing) -> Body {
        Body {
            framing,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunk: Chunk::Size {
                size: 0,
                digits: 0,
                ext: Ext::No,
            },
            line: 0,
        }
    }

    pub(crate) fn done(&self) -> bool {
        match self.framing {
            Framing::Empty => true,
            Framing::Length(_) => self.left == 0,
            Framing::Chunked => self.chunk == Chunk::Done,
            Framing::Close => false,
        }
    }

    /// How many of `bytes` (which follow what was taken before) belong to the body.
    pub(crate) fn take(&mut self, bytes: &[u8]) -> Result<usize, &'static str> {
        match self.framing {
            Framing::Empty => Ok(0),
            Framing::Close => Ok(bytes.len()),
            Framing::Length(_) => {
                let n = (bytes.len() as u64).min(self.left);
                self.left -= n;
                Ok(n as usize)
            }
            Framing::Chunked => self.take_chunked(bytes),
        }
    }

    fn take_chunked(&mut self, bytes: &[u8]) -> Result<usize, &'static str> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            self.chunk = match self.chunk {
                Chunk::Done => return Ok(i),
                Chunk::Data(left) => {
                    let n = (left.min((bytes.len() - i) as u64)) as usize;
                    i += n;
                    let left = left - n as u64;
                    self.chunk = if left == 0 {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(left)
                    };
                    continue;
                }
                Chunk::Size { size, digits, ext } => {
                    self.line += 1;
                    if self.line > MAX_LINE {
                        return Err("a chunk-size line is too long");
                    }
                    let ext = match (ext, b) {
                        (Ext::Quoted | Ext::Escaped, b'\r' | b'\n') => {
                            return Err("a chunk extension's quoted string does not end");
                        }
                        (_, b'\r') if digits > 0 => {
                            self.chunk = Chunk::SizeLf { size };
                            i += 1;
                            continue;
                        }
                        (_, b'\n') => return Err("a chunk-size line does not end in CRLF"),
                        (Ext::No, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                            if digits >= 16 {
                                return Err("a chunk size is too large");
                            }
                            let d = (b as char).to_digit(16).unwrap_or(0);
                            self.chunk = Chunk::Size {
                                size: size << 4 | u64::from(d),
                                digits: digits + 1,
                                ext,
                            };
                            i += 1;
                            continue;
                        }
                        (Ext::No, _) if digits == 0 => {
                            return Err("a chunk size is not hexadecimal");
                        }
                        (Ext::No | Ext::Blank, b' ' | b'\t') => Ext::Blank,
                        (Ext::No | Ext::Blank | Ext::In, b';') => Ext::In,
                        (Ext::No | Ext::Blank, _) => {
                            return Err("a chunk size is followed by something not an extension");
                        }
                        (Ext::In, b'"') => Ext::Quoted,
                        (Ext::In, b'=' | b' ' | b'\t') => Ext::In,
                        (Ext::In, _) if tchar(b) => Ext::In,
                        (Ext::Quoted, b'"') => Ext::In,
                        (Ext::Quoted, b'\\') => Ext::Escaped,
                        (Ext::Quoted | Ext::Escaped, _) if qchar(b) => Ext::Quoted,
                        _ => return Err("a chunk extension is malformed"),
                    };
                    Chunk::Size { size, digits, ext }
                }
                Chunk::SizeLf { size } => {
                    if b != b'\n' {
                        return Err("a chunk-size line does not end in CRLF");
                    }
                    self.line = 0;
                    if size == 0 {
                        Chunk::Trailer(0)
                    } else {
                        Chunk::Data(size)
                    }
                }
                Chunk::DataCr if b == b'\r' => Chunk::DataLf,
                Chunk::DataLf if b == b'\n' => Chunk::Size {
                    size: 0,
                    digits: 0,
                    ext: Ext::No,
                },
                Chunk::DataCr | Chunk::DataLf => return Err("chunk data does not end in CRLF"),
                Chunk::Trailer(n) => {
                    if b == b'\r' {
                        Chunk::TrailerLf { empty: n == 0 }
                    } else if b == b'\n' {
                        return Err("a trailer line does not end in CRLF");
                    } else if n >= MAX_LINE {
                        return Err("a trailer line is too long");
                    } else if !qchar(b) {
                        return Err("a trailer line is malformed");
                    } else {
                        Chunk::Trailer(n + 1)
                    }
                }
                Chunk::TrailerLf { empty } => {
                    if b != b'\n' {
                        return Err("a trailer line does not end in CRLF");
                    }
                    if empty {
                        Chunk::Done
                    } else {
                        Chunk::Trailer(0)
                    }
                }
            };
            i += 1;
        }
        Ok(i)
    }
}

/// Why a body could not be passed on.
#[derive(Debug)]
pub(crate) enum RelayError {
    /// Reading the source failed, or it ended before the body did.
    Source(String),
    /// Writing the destination failed.
    Sink(io::Error),
}

/// Writes `prefix` (a head, or empty) and then the body that `buf` and `from` carry to `to`,
/// as `body` frames it; the body's first bytes go in the same write as the prefix when they
/// are already here. Each read and write may wait at most `idle`.
pub(crate) async fn relay<R, W>(
    body: &mut Body,
    buf: &mut Buf,
    from: &mut R,
    to: &mut W,
    prefix: &mut Vec<u8>,
    idle: Duration,
) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "no progress");
    loop {
        let n = body
            .take(buf.bytes())
            .map_err(|e| RelayError::Source(e.to_string()))?;
        let write = if prefix.is_empty() {
            tokio::time::timeout(idle, to.write_all(&buf.bytes()[..n])).await
        } else {
            prefix.extend_from_slice(&buf.bytes()[..n]);
            let w = tokio::time::timeout(idle, to.write_all(prefix)).await;
            prefix.clear();
            w
        };
        write
            .map_err(|_| RelayError::Sink(timed_out()))?
            .map_err(RelayError::Sink)?;
        buf.consume(n);
        if body.done() {
            return Ok(());
        }
        match tokio::time::timeout(idle, buf.fill(from)).await {
            Err(_) => return Err(RelayError::Source("no data in time".into())),
            Ok(Err(e)) => return Err(RelayError::Source(e.to_string())),
            Ok(Ok(0)) if body.framing == Framing::Close => return Ok(()),
            Ok(Ok(0)) => return Err(RelayError::Source("the body was cut short".into())),
            Ok(Ok(_)) => {}
        }
    }
}

/// The reason phrase of a status this codec answers with itself (RFC 9110's); empty for any
/// other, which the status line allows.
fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// A complete response of our own (404, 502, ...), plain text.
pub(crate) fn plain(status: u16, text: &str, close: bool) -> Vec<u8> {
    let reason = reason(status);
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{}\r\n{text}\n",
        text.len() + 1,
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> IpAddr {
        "10.9.8.7".parse().unwrap()
    }

    fn request(head: &str) -> Result<(RequestHead, String), Refusal> {
        let mut out = Vec::new();
        let r = parse_request(head.as_bytes(), client(), &mut out)?.expect("complete");
        Ok((r, String::from_utf8(out).unwrap()))
    }

    #[test]
    fn request_heads_are_rewritten_for_the_endpoint() {
        let (r, out) = request(
            "GET /a/b?x=1 HTTP/1.1\r\nHost: Shop.Test:8080\r\nX-Forwarded-For: 1.2.3.4\r\nConnection: keep-alive, x-secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nX-Real-IP: 6.6.6.6\r\nAccept: */*\r\n\r\nrest",
        )
        .unwrap();
        assert_eq!(r.host, "shop.test");
        assert_eq!(&out[r.path.clone()], "/a/b");
        assert_eq!(r.framing, Framing::Empty);
        assert!(r.keep_alive && !r.upgrade && !r.head_method);
        assert_eq!(
            out,
            "GET /a/b?x=1 HTTP/1.1\r\nHost: Shop.Test:8080\r\nAccept: */*\r\nX-Forwarded-For: 1.2.3.4, 10.9.8.7\r\nX-Forwarded-Host: Shop.Test:8080\r\nX-Forwarded-Proto: http\r\nX-Real-IP: 10.9.8.7\r\nForwarded: for=10.9.8.7;host=\"Shop.Test:8080\";proto=http\r\n\r\n"
        );
        // The head's length leaves what follows it.
        let head = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(request(&format!("{head}GET")).unwrap().0.len, head.len());
    }

    #[test]
    fn framing_and_connection_of_requests() {
        let r = |h: &str| request(h).map(|(r, _)| (r.framing, r.keep_alive));
        assert_eq!(
            r("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"),
            Ok((Framing::Length(5), true))
        );
        assert_eq!(
            r("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"),
            Ok((Framing::Length(5), false))
        );
        assert_eq!(
            r("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Ok((Framing::Chunked, true))
        );
        assert_eq!(r("GET / HTTP/1.0\r\n\r\n"), Ok((Framing::Empty, false)));
        let status = |h: &str| r(h).unwrap_err().status;
        for smuggled in [
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nX: 1\rTransfer-Encoding: chunked\r\n\r\n",
            "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        ] {
            assert_eq!(status(smuggled), 400, "{smuggled}");
        }
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: br, chunked\r\n\r\n"),
            501
        );
        assert_eq!(status("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"), 405);
        assert_eq!(status("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n",
            "y".repeat(MAX_HEAD)
        );
        let mut out = Vec::new();
        assert_eq!(
            parse_request(big.as_bytes(), client(), &mut out)
                .unwrap_err()
                .status,
            431
        );
    }

    #[test]
    fn connection_never_takes_off_framing_or_host() {
        let (r, out) = request(
            "POST / HTTP/1.1\r\nHost: a\r\nConnection: content-length, host, transfer-encoding\r\nContent-Length: 5\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.framing, Framing::Length(5));
        assert!(
            out.starts_with("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"),
            "{out}"
        );
        let (_, out) = request(
            "POST / HTTP/1.1\r\nHost: a\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
        assert!(
            out.contains("\r\nTransfer-Encoding: gzip, chunked\r\n"),
            "{out}"
        );
        let (r, out) = response(
            "HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\n",
            false,
            false,
        );
        assert_eq!((r.framing, r.reusable), (Framing::Length(2), true));
        assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
    }

    #[test]
    fn absolute_targets_upgrades_and_ipv6_clients() {
        let (r, out) = request("GET http://Web.Test/x?q HTTP/1.1\r\nHost: other\r\n\r\n").unwrap();
        assert_eq!(r.host, "web.test");
        assert!(
            out.starts_with("GET /x?q HTTP/1.1\r\nHost: Web.Test\r\n"),
            "{out}"
        );
        assert!(!out.contains("other"), "{out}");
        let (r, _) = request("GET HTTP://a:81 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(r.host, "a");
        let (r, out) = request(
            "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .unwrap();
        assert!(r.upgrade);
        assert!(
            out.contains("Connection: upgrade\r\nUpgrade: websocket\r\n"),
            "{out}"
        );
        let (r, out) = request(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: H2C\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        )
        .unwrap();
        assert!(!r.upgrade);
        assert!(!out.to_ascii_lowercase().contains("upgrade"), "{out}");
        assert!(!out.contains("HTTP2-Settings"), "{out}");
        let mut out = Vec::new();
        parse_request(
            b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
            "fd00::1".parse().unwrap(),
            &mut out,
        )
        .unwrap()
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("Forwarded: for=\"[fd00::1]\";host=\"[::1]:80\""),
            "{out}"
        );
    }

    fn response(head: &str, head_method: bool, close: bool) -> (ResponseHead, String) {
        let mut out = Vec::new();
        let r = parse_response(head.as_bytes(), head_method, close, &mut out)
            .unwrap()
            .unwrap();
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn response_framing_and_reuse() {
        let (r, out) = response(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\n\r\nok",
            false,
            false,
        );
        assert_eq!(
            (r.framing, r.reusable, r.status),
            (Framing::Length(2), true, 200)
        );
        assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
        let (r, _) = response("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", true, false);
        assert_eq!(r.framing, Framing::Empty);
        let (r, out) = response("HTTP/1.0 200 OK\r\n\r\n", false, false);
        assert_eq!((r.framing, r.reusable), (Framing::Close, false));
        assert!(out.ends_with("Connection: close\r\n\r\n"));
        let (r, out) = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\nConnection: close\r\n\r\n",
            false,
            false,
        );
        assert_eq!((r.framing, r.reusable), (Framing::Chunked, false));
        assert_eq!(out, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        // Both framings: chunked wins, and the connection is in doubt, so not reused.
        let (r, _) = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            false,
            false,
        );
        assert_eq!((r.framing, r.reusable), (Framing::Chunked, false));
        for status in ["100 Continue", "204 No Content", "304 Not Modified"] {
            let (r, _) = response(
                &format!("HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n\r\n"),
                false,
                false,
            );
            assert_eq!(r.framing, Framing::Empty, "{status}");
        }
        let (r, _) = response(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            false,
            false,
        );
        assert_eq!(r.framing, Framing::Empty);
        let (r, out) = response(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            false,
            false,
        );
        assert_eq!(r.status, 101);
        assert!(
            out.ends_with("Connection: upgrade\r\nUpgrade: websocket\r\n\r\n"),
            "{out}"
        );
        let mut out = Vec::new();
        assert!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                false,
                false,
                &mut out
            )
            .is_err()
        );
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\n", false, false, &mut out)
                .unwrap()
                .is_none()
        );
    }

    /// Feeds `body` in pieces of `step` bytes; returns the bytes taken and whether it ended.
    fn chunked(body: &[u8], step: usize) -> Result<(usize, bool), &'static str> {
        let mut b = Body::new(Framing::Chunked);
        let mut taken = 0;
        for piece in body.chunks(step) {
            let n = b.take(piece)?;
            taken += n;
            if n < piece.len() {
                break;
            }
        }
        Ok((taken, b.done()))
    }

    #[test]
    fn chunked_bodies_end_where_they_say() {
        let body = b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Sum: 1\r\n\r\n";
        for step in [1, 2, 3, 7, body.len()] {
            assert_eq!(
                chunked(&[&body[..], b"NEXT"].concat(), step),
                Ok((body.len(), true))
            );
        }
        assert_eq!(chunked(b"0\r\n\r\n", 1), Ok((5, true)));
        let ext = b"5 ; a = \"q\\\"; x\" ;b\r\nhello\r\n0;c=d\r\n\r\n";
        assert_eq!(chunked(ext, 1), Ok((ext.len(), true)));
        assert_eq!(
            chunked(b"ffffffffffffffff\r\n", 100),
            Ok((18, false)),
            "16 hex digits fit"
        );
        assert_eq!(chunked(b"5\r\nhel", 100), Ok((6, false)));
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"g\r\n",
            b"\r\n",
            b"5\r\nhelloX\r\n",
            b"11111111111111111\r\n",
            b"0\r\nX: 1\n\r\n",
            b"0\r\nX: \x01\r\n\r\n",
            b"5 5\r\nhello\r\n0\r\n\r\n",
            b"5;a\x00\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"b\r\nhello\r\n0\r\n\r\n",
            b"5;a\nhello\r\n0\r\n\r\n",
            b"5;a=(\r\nhello\r\n0\r\n\r\n",
            b";\r\n",
            b"10000000000000000\r\n",
        ] {
            assert!(chunked(bad, 1).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let mut b = Body::new(Framing::Length(3));
        assert_eq!(b.take(b"abcdef"), Ok(3));
        assert!(b.done());
    }

    #[tokio::test]
    async fn relay_passes_one_body_and_leaves_the_next_message() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            a.write_all(b"llo\r\n0\r\n\r\nNEXT").await.unwrap();
            a
        });
        let mut buf = Buf::new();
        buf.data.extend_from_slice(b"5\r\nhe");
        let mut sink = Vec::new();
        let mut prefix = b"HEAD\r\n".to_vec();
        let mut body = Body::new(Framing::Chunked);
        relay(
            &mut body,
            &mut buf,
            &mut b,
            &mut sink,
            &mut prefix,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(sink, b"HEAD\r\n5\r\nhello\r\n0\r\n\r\n");
        assert_eq!(buf.bytes(), b"NEXT");
        drop(writer.await.unwrap());
        // A body cut short is an error; one that ends with the connection is not.
        let mut buf = Buf::new();
        let mut body = Body::new(Framing::Length(10));
        let r = relay(
            &mut body,
            &mut buf,
            &mut b,
            &mut sink,
            &mut Vec::new(),
            Duration::from_secs(5),
        )
        .await;
        assert!(matches!(r, Err(RelayError::Source(_))), "{r:?}");
    }

    proptest::proptest! {
        // PROPTEST_CASES sets the count: 256 in the test command, a million in
        // `scripts/bench fuzz`.
        #![proptest_config(proptest::prelude::ProptestConfig {
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]
        #[test]
        fn no_input_panics(input in proptest::collection::vec(proptest::num::u8::ANY, 0..600), step in 1usize..64) {
            let mut out = Vec::new();
            let _ = parse_request(&input, client(), &mut out);
            out.clear();
            let _ = parse_response(&input, false, false, &mut out);
            let _ = chunked(&input, step);
        }

        /// Any mix of framing fields and Connection tokens: what the ingress accepts, it
        /// passes on with one framing field, which a lenient reader (the first
        /// Content-Length, or any Transfer-Encoding that says chunked) takes as it did.
        #[test]
        fn accepted_framings_pass_on_unambiguously(
            fields in proptest::collection::vec(proptest::sample::select(vec![
                "Content-Length: 5", "Content-Length: 0", "Content-Length: 5, 5",
                "Content-Length: 7", "content-length:5", "Content-Length: +5",
                "Transfer-Encoding: chunked", "Transfer-Encoding: gzip, chunked",
                "Transfer-Encoding: xchunked", "Transfer-Encoding: chunked, identity",
                "transfer-encoding:  CHUNKED", "Transfer-Encoding: ,chunked,",
                "Connection: content-length", "Connection: transfer-encoding",
                "Connection: host", "Connection: close", "Host: other",
                " folded", "X-Y : z",
            ]), 0..5),
            absolute in proptest::bool::ANY,
        ) {
            let target = if absolute { "http://a.test/p" } else { "/p" };
            let mut head = format!("POST {target} HTTP/1.1\r\nHost: a.test\r\n");
            for f in &fields {
                head.push_str(f);
                head.push_str("\r\n");
            }
            head.push_str("\r\n");
            let mut out = Vec::new();
            let Ok(Some(r)) = parse_request(head.as_bytes(), client(), &mut out) else {
                return Ok(());
            };
            let text = String::from_utf8(out.clone()).unwrap().to_ascii_lowercase();
            let lines: Vec<&str> = text.lines().collect();
            let count = |p: &str| lines.iter().filter(|l| l.starts_with(p)).count();
            proptest::prop_assert!(count("content-length:") + count("transfer-encoding:") <= 1, "{}", text);
            proptest::prop_assert_eq!(count("host:"), 1, "{}", text);
            let hosts = fields.iter().any(|f| f.starts_with("Host"));
            proptest::prop_assert!(!hosts, "two Hosts were accepted: {}", text);
            proptest::prop_assert!(lines.contains(&"host: a.test"), "{}", text);
            let lenient = if lines.iter().any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked")) {
                Framing::Chunked
            } else {
                match lines.iter().find_map(|l| l.strip_prefix("content-length:")) {
                    Some(n) => match n.trim().parse::<u64>().unwrap() {
                        0 => Framing::Empty,
                        n => Framing::Length(n),
                    },
                    None => Framing::Empty,
                }
            };
            proptest::prop_assert_eq!(lenient, r.framing, "{}", text);
            let mut again = Vec::new();
            let r2 = parse_request(&out, client(), &mut again).unwrap().unwrap();
            proptest::prop_assert_eq!(r2.framing, r.framing);
        }

        #[test]
        fn heads_that_parse_parse_again_the_same(path in "/[a-z0-9/?=&]{0,20}", host in "[a-z]{1,10}(\\.[a-z]{1,5})?", len in 0u64..1000) {
            let head = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len}\r\n\r\n");
            let mut out = Vec::new();
            let r = parse_request(head.as_bytes(), client(), &mut out).unwrap().unwrap();
            proptest::prop_assert_eq!(&r.host, &host);
            // What goes to the endpoint is itself a valid head with the same framing.
            let mut again = Vec::new();
            let r2 = parse_request(&out, client(), &mut again).unwrap().unwrap();
            proptest::prop_assert_eq!(r2.framing, r.framing);
            proptest::prop_assert_eq!(&out[r.path.clone()], path.split('?').next().unwrap().as_bytes());
        }
    }
}
