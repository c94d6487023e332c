//! A fault-injecting HTTP proxy for S3 tests (toxiproxy-style, in process): forwards every
//! request to an upstream S3 server and, on a configurable fraction of requests, answers
//! 500 InternalError or 503 SlowDown (before or after forwarding), stalls, or cuts the
//! response body short. Counters say how many faults of each kind were injected, so a test
//! can prove the faults really happened.

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

#[derive(Debug, Default)]
pub struct FaultCounts {
    pub requests: AtomicU64,
    pub errors_500: AtomicU64,
    pub errors_503: AtomicU64,
    pub stalls: AtomicU64,
    pub cuts: AtomicU64,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    pub counts: Arc<FaultCounts>,
    enabled: Arc<std::sync::atomic::AtomicBool>,
    /// When set, faults hit only requests with this method whose path contains this text.
    only: Arc<Mutex<Option<(hyper::Method, String)>>>,
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
        let rng = Arc::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)));
        let client: Client<_, Incoming> = Client::builder(TokioExecutor::new()).build_http();
        let (c2, e2, o2) = (counts.clone(), enabled.clone(), only.clone());
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (client, counts, enabled, rng, only) = (
                    client.clone(),
                    c2.clone(),
                    e2.clone(),
                    rng.clone(),
                    o2.clone(),
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
            _rt: rt,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Turns fault injection off (the proxy keeps forwarding).
    pub fn disable(&self) {
        self.enabled.store(false, Ordering::SeqCst);
    }

    /// Turns fault injection (back) on.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::SeqCst);
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
) -> Result<Response<Body>, Infallible> {
    let n = counts.requests.fetch_add(1, Ordering::Relaxed);
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
    let (parts, body) = resp.into_parts();
    let Ok(collected) = body.collect().await else {
        return Ok(s3_error(StatusCode::BAD_GATEWAY, "ProxyUpstreamBody"));
    };
    let bytes = collected.to_bytes();
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
