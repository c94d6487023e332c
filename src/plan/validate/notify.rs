//! `[notify]`: a healthchecks.io-style `ping_url` and a JSON `webhook_url` (each http or
//! https), a `timeout` per attempt (default 10s) and `retries` after the first attempt
//! (default 2, at most 10).

use std::time::Duration;

use super::{Seg, Validator};
use crate::plan::model::NotifySpec;
use crate::plan::raw::NotifyConfig;

impl Validator<'_> {
    /// `[notify]`.
    pub(super) fn notify(&mut self, n: NotifyConfig) -> NotifySpec {
        for (key, url) in [("ping_url", &n.ping_url), ("webhook_url", &n.webhook_url)] {
            if let Some(u) = url {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    self.issue(
                        &[Seg::K("notify"), Seg::K(key)],
                        format!("{u:?} is not an http:// or https:// URL"),
                        "give the full URL, such as \"https://hc-ping.com/<uuid>\"",
                    );
                }
            }
        }
        if n.ping_url.is_none() && n.webhook_url.is_none() {
            self.issue(
                &[Seg::K("notify")],
                "[notify] names no endpoint",
                "set ping_url, webhook_url or both, or remove [notify]",
            );
        }
        let retries = n.retries.unwrap_or(2);
        if retries > 10 {
            self.issue(
                &[Seg::K("notify"), Seg::K("retries")],
                format!("{retries} retries would hold up the timer"),
                "use at most 10",
            );
        }
        NotifySpec {
            ping_url: n.ping_url,
            webhook_url: n.webhook_url,
            timeout: n
                .timeout
                .as_deref()
                .and_then(|t| self.duration(&[Seg::K("notify"), Seg::K("timeout")], t))
                .unwrap_or(Duration::from_secs(10)),
            retries: retries.min(10),
        }
    }
}
