//! A fault-injecting HTTP proxy for S3 tests (toxiproxy-style, in process): forwards every
//! request to an upstream S3 server and, on a configurable fraction of requests, answers
//! 500 InternalError or 503 SlowDown (before or after forwarding), stalls, or cuts the
//! response body short. Counters say how many faults of each kind were injected, so a test
//! can prove the faults really happened.
//!
//! Set at run time (T06, T07, T10): damaging upload bodies ([`FaultProxy::damage_uploads`]:
//! a byte flipped in flight, or a server that ignores checksums and stores flipped or
//! truncated bytes), stalling mid-body with the connection held open
//! ([`FaultProxy::stall_mid_body`]), and cutting ListObjectsV2 answers short
//! ([`FaultProxy::cut_listings`]: the last entries dropped, `IsTruncated` cleared).
//!
//! Blackhole (T08, [`FaultProxy::blackhole`]): every new connection is accepted and held open,
//! what the client sends is read and dropped, and not one byte goes back — a region that is
//! down the way real outages look (a load balancer with no healthy backend, a firewall eating
//! the traffic), not a stopped server that refuses connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::{Rng, SeedableRng};

type Body = BoxBody<Bytes, std::io::Error>;

#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Fraction of requests answered with 500 InternalError or 503 SlowDown (half each).
    pub error_rate: f64,
    /// Fraction of requests that get no answer for `stall`.
    pub stall_rate: f64,
    /// Fraction of responses whose body is cut in half (connection closed).
    pub cut_rate: f64,
    pub stall: Duration,
    /// Whether an error may be injected after the request reached the server (it took
    /// effect, the client sees a failure). A lost CreateMultipartUpload answer leaves an
    /// upload the client cannot know about, so tests of abort-on-failure turn this off.
    pub after_forwarding: bool,
    /// Refuse every UploadPart request with 403 AccessDenied (a permanent error mid-upload).
    pub reject_parts: bool,
}

impl Faults {
    /// No random fault: the proxy forwards everything until a run-time fault is set.
    pub const fn none() -> Faults {
        Faults {
            error_rate: 0.0,
            stall_rate: 0.0,
            cut_rate: 0.0,
            stall: Duration::from_secs(0),
            after_forwarding: false,
            reject_parts: false,
        }
    }
}

#[derive(Debug, Default)]
pub struct FaultCounts {
    pub requests: AtomicU64,
    pub errors_500: AtomicU64,
    pub errors_503: AtomicU64,
    pub stalls: AtomicU64,
    pub cuts: AtomicU64,
    /// Upload bodies damaged ([`FaultProxy::damage_uploads`]).
    pub damaged: AtomicU64,
    /// Requests or responses stalled mid-body ([`FaultProxy::stall_mid_body`]).
    pub mid_body_stalls: AtomicU64,
    /// ListObjectsV2 answers cut short ([`FaultProxy::cut_listings`]).
    pub listings_cut: AtomicU64,
    /// Connections accepted and held without an answer ([`FaultProxy::blackhole`]).
    pub blackholed: AtomicU64,
}

/// How [`FaultProxy::damage_uploads`] damages a single PUT under `data/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// One byte of the body flipped on the way (signature and Content-MD5 still describe the
    /// original): an honest server refuses it.
    FlipInFlight,
    /// A server that ignores checksums: it stores the body with one byte flipped (written
    /// through the test's own credentials) and answers 200 with the ETag of what it stored.
    StoreFlipped,
    /// Like `StoreFlipped`, storing only the first half of the body.
    StoreTruncated,
}

/// The run-time faults, set by the test while the proxy serves.
#[derive(Default)]
struct Extra {
    /// Damage for the next this-many single PUTs under `data/`, and the store the "server
    /// that ignores checksums" writes with (bucket root, no prefix).
    damage: Option<(Damage, u64, Option<lifeboat::store::DynStore>)>,
    /// Stall the next this-many answers to `method` requests whose path contains the text:
    /// half the body, then nothing for the duration, then the connection is reset. A PUT is
    /// stalled while its body is read instead (half read, then nothing read).
    stall_mid_body: Option<(hyper::Method, String, u64, Duration)>,
    /// Cut every ListObjectsV2 answer whose query contains this text (e.g. `data%2F`).
    cut_listings: Option<String>,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    pub counts: Arc<FaultCounts>,
    enabled: Arc<std::sync::atomic::AtomicBool>,
    /// When set, faults hit only requests with this method whose path contains this text.
    only: Arc<Mutex<Option<(hyper::Method, String)>>>,
    extra: Arc<Mutex<Extra>>,
    blackhole: Arc<std::sync::atomic::AtomicBool>,
    _rt: tokio::runtime::Runtime,
}

impl FaultProxy {
    /// Starts the proxy on a free port in its own runtime (so it keeps serving while the test
    /// blocks on a child process).
    pub fn start(upstream_port: u16, faults: Faults, seed: u64) -> FaultProxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(FaultCounts::default());
        let enabled = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let only: Arc<Mutex<Option<(hyper::Method, String)>>> = Arc::default();
        let extra: Arc<Mutex<Extra>> = Arc::default();
        let rng = Arc::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)));
        let client: Client<_, Incoming> = Client::builder(TokioExecutor::new()).build_http();
        let (c2, e2, o2, x2) = (counts.clone(), enabled.clone(), only.clone(), extra.clone());
        let blackhole = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let b2 = blackhole.clone();
        rt.spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    continue;
                };
                if b2.load(Ordering::SeqCst) {
                    c2.blackholed.fetch_add(1, Ordering::Relaxed);
                    // Read and drop whatever comes until the client gives up; answer nothing.
                    tokio::spawn(async move {
                        let mut sink = tokio::io::sink();
                        let _ = tokio::io::copy(&mut tcp, &mut sink).await;
                    });
                    continue;
                }
                let (client, counts, enabled, rng, only, extra) = (
                    client.clone(),
                    c2.clone(),
                    e2.clone(),
                    rng.clone(),
                    o2.clone(),
                    x2.clone(),
                );
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(
                            req,
                            upstream_port,
                            faults,
                            client.clone(),
                            counts.clone(),
                            enabled.clone(),
                            rng.clone(),
                            only.clone(),
                            extra.clone(),
                        )
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        FaultProxy {
            addr,
            counts,
            enabled,
            only,
            extra,
            blackhole,
            _rt: rt,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Blackholes (`true`) or restores (`false`) the region behind the proxy: while on, every
    /// new connection is accepted and held without a byte back (see the module documentation);
    /// connections taken before keep being served.
    pub fn blackhole(&self, on: bool) {
        self.blackhole.store(on, Ordering::SeqCst);
    }

    /// Turns fault injection off (the proxy keeps forwarding).
    pub fn disable(&self) {
        self.enabled.store(false, Ordering::SeqCst);
    }

    /// Turns fault injection (back) on.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::SeqCst);
    }

    /// Damages the next `n` single PUTs under `data/` as `how` says. `StoreFlipped` and
    /// `StoreTruncated` need `backdoor`: a store on the same bucket with no prefix, which the
    /// proxy writes the damaged bytes with (a real server that ignores checksums would).
    pub fn damage_uploads(&self, how: Damage, n: u64, backdoor: Option<lifeboat::store::DynStore>) {
        assert!(
            how == Damage::FlipInFlight || backdoor.is_some(),
            "{how:?} needs a backdoor store"
        );
        self.extra.lock().unwrap().damage = Some((how, n, backdoor));
    }

    /// Stalls the next `n` exchanges of `method` requests whose path contains
    /// `path_contains` mid-body, the connection held open for `stall`: a GET gets half its
    /// answer, then nothing; a PUT has half its body read, then nothing.
    pub fn stall_mid_body(&self, method: &str, path_contains: &str, n: u64, stall: Duration) {
        self.extra.lock().unwrap().stall_mid_body = Some((
            method.parse().expect("an HTTP method"),
            path_contains.to_string(),
            n,
            stall,
        ));
    }

    /// Cuts every ListObjectsV2 answer whose query contains `query_contains` (`None`: stop):
    /// the second half of its entries is dropped and `IsTruncated` cleared, as if the last
    /// page were lost and the server said the listing was complete.
    pub fn cut_listings(&self, query_contains: Option<&str>) {
        self.extra.lock().unwrap().cut_listings = query_contains.map(str::to_string);
    }

    /// Injects faults only into `method` requests whose path contains `path_contains`
    /// (e.g. GETs of packs: `"GET"`, `"/data/"`); the others pass untouched.
    pub fn only(&self, method: &str, path_contains: &str) {
        *self.only.lock().unwrap() = Some((
            method.parse().expect("an HTTP method"),
            path_contains.to_string(),
        ));
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn s3_error(status: StatusCode, code: &str) -> Response<Body> {
    let xml = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>");
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(full(xml))
        .unwrap()
}

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    ErrorBefore(bool),
    ErrorAfter(bool),
    Stall,
    Cut,
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    req: Request<Incoming>,
    upstream_port: u16,
    f: Faults,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Incoming>,
    counts: Arc<FaultCounts>,
    enabled: Arc<std::sync::atomic::AtomicBool>,
    rng: Arc<Mutex<rand::rngs::StdRng>>,
    only: Arc<Mutex<Option<(hyper::Method, String)>>>,
    extra: Arc<Mutex<Extra>>,
) -> Result<Response<Body>, Infallible> {
    let n = counts.requests.fetch_add(1, Ordering::Relaxed);
    let (damage, stall_mid, cut_listing) = extra_faults(&req, &extra);
    if let Some((how, backdoor)) = damage {
        return Ok(damage_upload(req, how, backdoor, upstream_port, &counts).await);
    }
    let mut req = req;
    if let Some(stall) = stall_mid.filter(|_| req.method() == hyper::Method::PUT) {
        // Read half the body, then nothing more for `stall`; the request is never forwarded.
        let expected: usize = req
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        counts.mid_body_stalls.fetch_add(1, Ordering::Relaxed);
        let mut read = 0usize;
        while read < expected / 2 {
            match req.body_mut().frame().await {
                Some(Ok(f)) => read += f.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
        tokio::time::sleep(stall).await;
        return Ok(s3_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError"));
    }
    let selected = match &*only.lock().unwrap() {
        Some((m, p)) => req.method() == m && req.uri().path().contains(p.as_str()),
        None => true,
    };
    if f.reject_parts && req.uri().query().is_some_and(|q| q.contains("partNumber=")) {
        // Read the part first, as S3 does before it answers: answering while the client is
        // still writing the body races its write (a broken pipe instead of the 403).
        let _ = req.into_body().collect().await;
        return Ok(s3_error(StatusCode::FORBIDDEN, "AccessDenied"));
    }
    let fault = if !enabled.load(Ordering::SeqCst) || !selected {
        Fault::None
    } else if n == 3 && f.stall_rate > 0.0 {
        // Besides the random ones, every enabled kind of fault happens at least once.
        Fault::Stall
    } else if (n == 5 || n == 7) && f.error_rate > 0.0 {
        Fault::ErrorBefore(n == 5)
    } else if n >= 9 && f.cut_rate > 0.0 && counts.cuts.load(Ordering::Relaxed) == 0 {
        Fault::Cut
    } else {
        let mut r = rng.lock().unwrap();
        let x: f64 = r.gen();
        if x < f.error_rate {
            let slow = r.gen_bool(0.5);
            if f.after_forwarding && r.gen_bool(0.5) {
                Fault::ErrorAfter(slow)
            } else {
                Fault::ErrorBefore(slow)
            }
        } else if x < f.error_rate + f.stall_rate {
            Fault::Stall
        } else if x < f.error_rate + f.stall_rate + f.cut_rate {
            Fault::Cut
        } else {
            Fault::None
        }
    };
    let error = |slow: bool| {
        if slow {
            counts.errors_503.fetch_add(1, Ordering::Relaxed);
            s3_error(StatusCode::SERVICE_UNAVAILABLE, "SlowDown")
        } else {
            counts.errors_500.fetch_add(1, Ordering::Relaxed);
            s3_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
        }
    };
    match fault {
        Fault::ErrorBefore(slow) => return Ok(error(slow)),
        Fault::Stall => {
            // No answer at all for a long time; the request is never forwarded, so a client
            // that gave up cannot be surprised by a late write.
            counts.stalls.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(f.stall).await;
            return Ok(s3_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError"));
        }
        _ => {}
    }
    // Forward (Host header untouched: it is part of the SigV4 signature).
    let (mut parts, body) = req.into_parts();
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    parts.uri = format!("http://127.0.0.1:{upstream_port}{pq}")
        .parse()
        .unwrap();
    let resp = match client.request(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => {
            return Ok(s3_error(
                StatusCode::BAD_GATEWAY,
                &format!("ProxyUpstream {e}"),
            ))
        }
    };
    if let Fault::ErrorAfter(slow) = fault {
        return Ok(error(slow));
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(collected) = body.collect().await else {
        return Ok(s3_error(StatusCode::BAD_GATEWAY, "ProxyUpstreamBody"));
    };
    let mut bytes = collected.to_bytes();
    if cut_listing && parts.status.is_success() {
        if let Some(cut) = cut_listing_xml(&bytes) {
            counts.listings_cut.fetch_add(1, Ordering::Relaxed);
            bytes = cut;
            parts.headers.insert("content-length", bytes.len().into());
        }
    }
    if let Some(stall) = stall_mid {
        if bytes.len() >= 2 {
            counts.mid_body_stalls.fetch_add(1, Ordering::Relaxed);
            let half = bytes.slice(..bytes.len() / 2);
            // Half the answer, then nothing for `stall` with the connection open, then a reset.
            let rest = futures::stream::once(async move {
                tokio::time::sleep(stall).await;
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "stalled by the test proxy",
                ))
            });
            let stream =
                futures::StreamExt::chain(futures::stream::iter(vec![Ok(Frame::data(half))]), rest);
            let mut resp = Response::from_parts(parts, BodyExt::boxed(StreamBody::new(stream)));
            resp.headers_mut()
                .insert("content-length", bytes.len().into());
            return Ok(resp);
        }
    }
    if fault == Fault::Cut && bytes.len() >= 2 {
        counts.cuts.fetch_add(1, Ordering::Relaxed);
        let half = bytes.slice(..bytes.len() / 2);
        // Content-Length still says the full size; the stream then fails, so hyper drops the
        // connection mid-body, as a reset connection would.
        let stream = futures::stream::iter(vec![
            Ok(Frame::data(half)),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "cut by the test proxy",
            )),
        ]);
        let mut resp = Response::from_parts(parts, BodyExt::boxed(StreamBody::new(stream)));
        resp.headers_mut()
            .insert("content-length", bytes.len().into());
        return Ok(resp);
    }
    Ok(Response::from_parts(parts, full(bytes)))
}

/// A damage to apply, with the store a checksum-ignoring server writes with.
type DamageWith = (Damage, Option<lifeboat::store::DynStore>);

/// Which run-time faults hit this request (and uses up one of a counted kind): the damage to
/// apply to an upload, the mid-body stall, whether its listing answer is cut.
fn extra_faults(
    req: &Request<Incoming>,
    extra: &Mutex<Extra>,
) -> (Option<DamageWith>, Option<Duration>, bool) {
    let mut x = extra.lock().unwrap();
    let query = req.uri().query().unwrap_or("");
    let path = req.uri().path();
    let single_put = req.method() == hyper::Method::PUT
        && path.contains("/data/")
        && !query.contains("partNumber=")
        && !query.contains("uploadId=");
    let mut damage = None;
    if let Some((how, left, backdoor)) = x.damage.as_mut() {
        if single_put && *left > 0 {
            *left -= 1;
            damage = Some((*how, backdoor.clone()));
        }
    }
    let mut stall = None;
    if let Some((m, p, left, d)) = x.stall_mid_body.as_mut() {
        if damage.is_none() && req.method() == *m && path.contains(p.as_str()) && *left > 0 {
            *left -= 1;
            stall = Some(*d);
        }
    }
    let cut = req.method() == hyper::Method::GET
        && query.contains("list-type=2")
        && x.cut_listings.as_deref().is_some_and(|t| query.contains(t));
    (damage, stall, cut)
}

/// Applies `how` to a single PUT: flips a byte and forwards it, or stores damaged bytes
/// through `backdoor` and answers as a server that ignores checksums would.
async fn damage_upload(
    req: Request<Incoming>,
    how: Damage,
    backdoor: Option<lifeboat::store::DynStore>,
    upstream_port: u16,
    counts: &FaultCounts,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await else {
        return s3_error(StatusCode::BAD_REQUEST, "IncompleteBody");
    };
    let mut data = body.to_bytes().to_vec();
    if data.is_empty() {
        return s3_error(StatusCode::BAD_REQUEST, "IncompleteBody");
    }
    counts.damaged.fetch_add(1, Ordering::Relaxed);
    match how {
        Damage::FlipInFlight | Damage::StoreFlipped => {
            let i = data.len() / 2;
            data[i] ^= 0x40;
        }
        Damage::StoreTruncated => data.truncate(data.len() / 2),
    }
    if how == Damage::FlipInFlight {
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let mut parts = parts;
        parts.uri = format!("http://127.0.0.1:{upstream_port}{pq}")
            .parse()
            .unwrap();
        return forward_bytes(parts, Bytes::from(data)).await;
    }
    // "/<bucket>/<key>" (path-style): the backdoor store has no prefix.
    let key = parts
        .uri
        .path()
        .trim_start_matches('/')
        .split_once('/')
        .map(|(_, k)| k.to_string())
        .unwrap_or_default();
    let etag = hex::encode(<md5::Md5 as md5::Digest>::digest(&data));
    match backdoor
        .expect("checked in damage_uploads")
        .put(&key, Bytes::from(data))
        .await
    {
        Ok(()) => Response::builder()
            .status(StatusCode::OK)
            .header("etag", format!("\"{etag}\""))
            .body(full(Bytes::new()))
            .unwrap(),
        Err(e) => s3_error(StatusCode::BAD_GATEWAY, &format!("ProxyBackdoor {e}")),
    }
}

/// Sends one request with an in-memory body upstream and relays the answer.
async fn forward_bytes(parts: hyper::http::request::Parts, body: Bytes) -> Response<Body> {
    // The proxy's shared client forwards `Incoming` bodies only: this one has its own.
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    match client
        .request(Request::from_parts(parts, Full::new(body)))
        .await
    {
        Ok(r) => {
            let (parts, body) = r.into_parts();
            match body.collect().await {
                Ok(b) => Response::from_parts(parts, full(b.to_bytes())),
                Err(_) => s3_error(StatusCode::BAD_GATEWAY, "ProxyUpstreamBody"),
            }
        }
        Err(e) => s3_error(StatusCode::BAD_GATEWAY, &format!("ProxyUpstream {e}")),
    }
}

/// A ListObjectsV2 answer without the second half of its entries and with `IsTruncated`
/// false (no continuation token): `None` when there is nothing to drop.
fn cut_listing_xml(body: &[u8]) -> Option<Bytes> {
    let xml = std::str::from_utf8(body).ok()?;
    let starts: Vec<usize> = xml.match_indices("<Contents>").map(|(i, _)| i).collect();
    if starts.len() < 2 {
        return None;
    }
    let keep = starts.len().div_ceil(2);
    let cut_from = starts[keep];
    let last_end = xml.rfind("</Contents>")? + "</Contents>".len();
    let mut out = format!("{}{}", &xml[..cut_from], &xml[last_end..]);
    out = out.replace(
        "<IsTruncated>true</IsTruncated>",
        "<IsTruncated>false</IsTruncated>",
    );
    if let (Some(a), Some(b)) = (
        out.find("<NextContinuationToken>"),
        out.find("</NextContinuationToken>"),
    ) {
        out.replace_range(a..b + "</NextContinuationToken>".len(), "");
    }
    if let (Some(a), Some(b)) = (out.find("<KeyCount>"), out.find("</KeyCount>")) {
        out.replace_range(a + "<KeyCount>".len()..b, &keep.to_string());
    }
    Some(Bytes::from(out))
}
