//! Notifications (`[notify]`): pings and the webhook reach a local HTTP server with what
//! happened; an endpoint that is down, slow or answers 500 costs a warning and never
//! changes the exit code of the backup it is about; and no payload carries a secret.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Ok,
    Fails500,
    Slow,
    Down,
}

/// A local HTTP endpoint that records each request (path, body) and answers as `mode` says.
struct Endpoint {
    url: String,
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl Endpoint {
    fn start(mode: Mode) -> Endpoint {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        if mode == Mode::Down {
            // Nothing listens on the port any more: connections are refused.
            drop(l);
            return Endpoint { url, seen };
        }
        let s = seen.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                s.lock()
                    .unwrap()
                    .push((path, String::from_utf8_lossy(&body).into_owned()));
                let status = match mode {
                    Mode::Fails500 => "500 Internal Server Error",
                    Mode::Slow => {
                        std::thread::sleep(Duration::from_secs(3));
                        "200 OK"
                    }
                    _ => "200 OK",
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
            }
        });
        Endpoint { url, seen }
    }

    fn seen(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

const PING_ID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

/// A yearly directory job (`ok`: its data exists; else the source path is missing) with
/// `[notify]` pointing at `ep`.
fn notify_plan(ws: &Workspace, name: &str, ok: bool, ep: &Endpoint) -> std::path::PathBuf {
    let data = ws.path().join(format!("{name}-data"));
    if ok {
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("a.txt"), b"hello").unwrap();
    }
    ws.plan(
        name,
        &format!(
            "[[jobs]]\nname = \"files\"\nschedule = \"0 0 1 1 *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n\n\
             [notify]\nping_url = \"{}/ping/{PING_ID}\"\nwebhook_url = \"{}/hook\"\ntimeout = \"1s\"\nretries = 1\n",
            data.display(),
            ep.url,
            ep.url
        ),
    )
}

fn run_due(ws: &Workspace, plan: &std::path::Path) -> std::process::Output {
    run(lifeboat()
        .env("LIFEBOAT_STATE_DIR", ws.path().join("state"))
        .args(["run-due", "--plan"])
        .arg(plan))
}

#[test]
fn pings_and_the_webhook_say_what_happened_and_carry_no_secret() {
    let ep = Endpoint::start(Mode::Ok);
    let ws = Workspace::new();
    let good = notify_plan(&ws, "good", true, &ep);
    let o = run_due(&ws, &good);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let seen = ep.seen();
    let paths: Vec<_> = seen.iter().map(|(p, _)| p.as_str()).collect();
    let base = format!("/ping/{PING_ID}");
    assert_eq!(paths, [format!("{base}/start"), base.clone()], "{seen:?}");
    let v: serde_json::Value = serde_json::from_str(&seen[1].1).unwrap();
    assert_eq!(v["event"], "success");
    assert_eq!(v["tasks"][0]["task"], "good/files/backup");
    assert_eq!(v["tasks"][0]["exit_code"], 0);

    // A backup that fails: the webhook at once, the plan's fail ping after its last task,
    // each with the error and exit code.
    let bad = notify_plan(&ws, "bad", false, &ep);
    let o = run_due(&ws, &bad);
    let code = o.status.code().unwrap();
    assert_ne!(code, 0, "{}", stderr(&o));
    let seen = ep.seen();
    let paths: Vec<_> = seen[2..].iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            format!("{base}/start"),
            "/hook".into(),
            format!("{base}/fail"),
            "/hook".into()
        ]
    );
    let hook: serde_json::Value = serde_json::from_str(&seen[3].1).unwrap();
    let fail: serde_json::Value = serde_json::from_str(&seen[4].1).unwrap();
    assert_eq!(fail["event"], "failure", "{fail}");
    assert_eq!(fail["plan"], "bad");
    for v in [&hook, &fail["tasks"][0]] {
        assert_eq!(v["event"], "failure", "{v}");
        assert_eq!(v["plan"], "bad");
        assert_eq!(v["exit_code"], code);
        assert!(v["error"].as_str().unwrap().contains("bad-data"), "{v}");
    }
    // After the tick: the objective the failure leaves missed, once.
    let missed: serde_json::Value = serde_json::from_str(&seen[5].1).unwrap();
    assert_eq!(missed["event"], "objective_missed", "{missed}");
    assert_eq!(missed["misses"][0]["objective"], "rpo", "{missed}");
    let o = run_due(&ws, &bad);
    assert_eq!(o.status.code(), Some(0), "nothing is due: {}", stderr(&o));
    let seen = ep.seen();
    assert_eq!(
        seen.len(),
        6,
        "a miss that goes on is not announced again: {seen:?}"
    );
    // No payload carries the repository password (or the ping URL's secret path).
    for (_, body) in &seen {
        assert!(!body.contains(PASSWORD), "{body}");
        assert!(!body.contains(PING_ID), "{body}");
    }
}

#[test]
fn an_endpoint_down_slow_or_failing_never_changes_a_backups_exit_code() {
    // The exit code of the failing backup without any notification, to compare with.
    let ws = Workspace::new();
    let quiet = ws.plan(
        "plain",
        &format!(
            "[[jobs]]\nname = \"files\"\nschedule = \"0 0 1 1 *\"\n[jobs.source]\ntype = \"dir\"\npaths = [\"{}\"]\n",
            ws.path().join("missing").display()
        ),
    );
    let baseline = run_due(&ws, &quiet).status.code().unwrap();
    assert_ne!(baseline, 0);

    for mode in [Mode::Down, Mode::Slow, Mode::Fails500] {
        let ep = Endpoint::start(mode);
        let ws = Workspace::new();
        let good = notify_plan(&ws, "good", true, &ep);
        let started = std::time::Instant::now();
        let o = run_due(&ws, &good);
        assert_eq!(o.status.code(), Some(0), "{mode:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("was not delivered"),
            "{mode:?}: {}",
            stderr(&o)
        );
        // the ping URL's secret path is not in the warning either
        assert!(!stderr(&o).contains(PING_ID), "{}", stderr(&o));
        assert_eq!(
            ws.snapshots(&good).len(),
            1,
            "{mode:?}: the backup is saved"
        );
        // timeouts and retries bound the wait: 2 pings × 2 attempts × 1 s, plus backoff
        assert!(started.elapsed() < Duration::from_secs(30), "{mode:?}");
        match mode {
            Mode::Fails500 => assert_eq!(ep.seen().len(), 4, "each ping tried twice"),
            // the one-thread server is still asleep on the first attempt of the first ping
            Mode::Slow => assert!(!ep.seen().is_empty()),
            _ => {}
        }

        let bad = notify_plan(&ws, "bad", false, &ep);
        let o = run_due(&ws, &bad);
        assert_eq!(o.status.code(), Some(baseline), "{mode:?}: {}", stderr(&o));
    }
}
