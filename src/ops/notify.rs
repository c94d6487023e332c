//! Notifications (`[notify]` in a plan): healthchecks.io-style pings — `URL/start` before a
//! scheduled task, `URL` after it succeeded, `URL/fail` with a JSON body after it failed —
//! and a generic JSON webhook (POST) for failed backups, failed drills and missed objectives.
//!
//! Each request has the plan's timeout and a few retries with a short backoff. A notification
//! that cannot be delivered is an [`Event::Warning`](super::Event::Warning): it never changes
//! the exit code of the backup or drill it is about. Payloads are built by the caller from
//! names, times and exit codes only: no password, key, token or catalog URL goes into them.
//! https works through rustls with the system's root certificates.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::Env;
use crate::plan::NotifySpec;

/// Which ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ping {
    Start,
    Success,
    Fail,
}

type Https = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// Sends a plan's notifications.
pub struct Notifier {
    spec: NotifySpec,
}

/// Why one delivery failed (after its retries).
#[derive(Debug)]
pub struct NotifyError(pub String);

impl std::fmt::Display for NotifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn client() -> std::result::Result<Client<Https, Full<Bytes>>, NotifyError> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider)
        .map_err(|e| {
            NotifyError(format!(
                "no TLS root certificates could be loaded ({e}); install the ca-certificates package"
            ))
        })?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// The URL without its path and query: what a warning may show (a healthchecks.io ping URL's
/// path is its secret).
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?']).next().unwrap_or("");
            let host = host.rsplit('@').next().unwrap_or(host);
            format!("{scheme}://{host}/…")
        }
        None => "<not a URL>".into(),
    }
}

impl Notifier {
    pub fn new(spec: NotifySpec) -> Self {
        Notifier { spec }
    }

    /// Sends one ping (no-op without `ping_url`); a failure is a warning on `env`.
    pub async fn ping(&self, env: &Env, kind: Ping, body: &serde_json::Value) {
        let Some(base) = &self.spec.ping_url else {
            return;
        };
        let base = base.trim_end_matches('/');
        let url = match kind {
            Ping::Start => format!("{base}/start"),
            Ping::Success => base.to_string(),
            Ping::Fail => format!("{base}/fail"),
        };
        if let Err(e) = self.post(&url, body).await {
            env.warn(format!(
                "the {kind:?} ping to {} was not delivered: {e}; the task's result stands",
                redact_url(base)
            ));
        }
    }

    /// Posts `body` to the webhook (no-op without `webhook_url`); a failure is a warning.
    pub async fn webhook(&self, env: &Env, body: &serde_json::Value) {
        let Some(url) = &self.spec.webhook_url else {
            return;
        };
        if let Err(e) = self.post(url, body).await {
            env.warn(format!(
                "the webhook {} was not delivered: {e}; the task's result stands",
                redact_url(url)
            ));
        }
    }

    /// POSTs JSON with the timeout and retries of the plan; 2xx is delivered.
    pub async fn post(
        &self,
        url: &str,
        body: &serde_json::Value,
    ) -> std::result::Result<(), NotifyError> {
        let client = client()?;
        let bytes = Bytes::from(serde_json::to_vec(body).expect("json"));
        let mut last = String::new();
        for attempt in 0..=self.spec.retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
            let req = hyper::Request::post(url)
                .header("content-type", "application/json")
                .header(
                    "user-agent",
                    concat!("lifeboat/", env!("CARGO_PKG_VERSION")),
                )
                .body(Full::new(bytes.clone()))
                .map_err(|e| NotifyError(format!("not a valid URL ({e})")))?;
            match tokio::time::timeout(self.spec.timeout, client.request(req)).await {
                Ok(Ok(resp)) if resp.status().is_success() => return Ok(()),
                Ok(Ok(resp)) => last = format!("the endpoint answered {}", resp.status()),
                Ok(Err(e)) => last = format!("cannot connect ({e})"),
                Err(_) => {
                    last = format!(
                        "no answer within {}",
                        humantime::format_duration(self.spec.timeout)
                    )
                }
            }
        }
        Err(NotifyError(format!(
            "{last} (after {} attempts)",
            self.spec.retries + 1
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> NotifySpec {
        NotifySpec {
            ping_url: None,
            webhook_url: Some(url.into()),
            timeout: Duration::from_secs(2),
            retries: 0,
        }
    }

    /// https goes through rustls with the system's roots: against a server that does not
    /// speak TLS the request fails in the handshake, not as an unsupported scheme (the
    /// integration tests post over plain http to a local server).
    #[tokio::test]
    async fn https_urls_are_spoken_to_over_tls() {
        use tokio::io::AsyncWriteExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nnot tls").await;
            }
        });
        let n = Notifier::new(spec(&format!("https://{addr}/hook")));
        let e = n
            .post(&format!("https://{addr}/hook"), &serde_json::json!({}))
            .await;
        let e = e.unwrap_err().to_string();
        assert!(e.starts_with("cannot connect"), "{e}");
        assert!(!e.contains("scheme"), "{e}");
    }

    #[test]
    fn warnings_never_show_a_ping_urls_path() {
        assert_eq!(
            redact_url("https://hc-ping.com/0f1e2d3c-uuid"),
            "https://hc-ping.com/…"
        );
        assert_eq!(
            redact_url("http://user:pw@hooks.example:8080/x?token=1"),
            "http://hooks.example:8080/…"
        );
    }
}
