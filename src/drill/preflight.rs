//! Before a plan's first drill: its environment, checked without creating anything — a
//! scratch server answers with the password from the plan (nothing is created or swept);
//! command scripts are at least valid shell.

use super::env::{CommandSpec, ScratchSpec};
use crate::secret::SecretSpec;
use crate::source::preflight::Check;

/// The drill environment's preflight checks (blocking: pings the server, runs `sh -n`):
/// a scratch server (and the secret its password comes from), or command scripts.
pub fn check_drill(
    scratch: Option<(&ScratchSpec, Option<&SecretSpec>)>,
    command: Option<&CommandSpec>,
) -> Vec<Check> {
    let mut out = Vec::new();
    if let Some((server, secret)) = scratch {
        let password = match secret {
            None => None,
            Some(sec) => match sec.read() {
                Ok(pw) => Some(super::sql::Password(pw)),
                Err(e) => {
                    out.push(Check {
                        ok: false,
                        what: format!("server password: {e}; {}", e.fix),
                    });
                    return out;
                }
            },
        };
        let server_name = server.server.describe(&server.kind);
        let scratch = super::env::ScratchServer::new(
            server.clone(),
            password,
            "preflight",
            std::time::Duration::ZERO,
        );
        out.push(match scratch.ping() {
            Ok(v) => Check {
                ok: true,
                what: format!("server {server_name} answers (version {v})"),
            },
            Err(e) => Check {
                ok: false,
                what: format!(
                    "server {server_name}: {e}; check the URL, the role and the password source"
                ),
            },
        });
    }
    if let Some(c) = command {
        for (name, script) in [("provision", &c.provision), ("teardown", &c.teardown)] {
            let r = crate::sys::process::command("sh")
                .args(["-n", "-c", script])
                .output();
            out.push(match r {
                Ok(o) if o.status.success() => Check {
                    ok: true,
                    what: format!("{name} command is valid shell"),
                },
                Ok(o) => Check {
                    ok: false,
                    what: format!(
                        "{name} command is not valid shell: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                },
                Err(e) => Check {
                    ok: false,
                    what: format!("cannot run sh to check the {name} command: {e}"),
                },
            });
        }
    }
    out
}
