//! `[repository]`: where the repository password comes from; and the rule every password
//! source in a plan follows (exactly one of `password_file`, `password_env`,
//! `password_credential`, `password_command`, a credential being a plain name).

use std::path::PathBuf;

use super::{Seg, Validator};
use crate::plan::raw::RepositoryConfig;
use crate::secret::SecretSpec;

impl Validator<'_> {
    /// `[repository]`: the password source, which is required.
    pub(super) fn repository(&mut self, r: RepositoryConfig) -> SecretSpec {
        self.secret(
            &[Seg::K("repository")],
            r.password_file,
            r.password_env,
            r.password_credential,
            r.password_command,
            true,
        )
        .unwrap_or(SecretSpec::Env(String::new()))
    }

    /// The password source given by `password_file`, `password_env`, `password_credential`
    /// or `password_command` in the table at `path`: exactly one of them, or none when it is
    /// not `required`.
    pub(super) fn secret(
        &mut self,
        path: &[Seg],
        file: Option<PathBuf>,
        env: Option<String>,
        cred: Option<String>,
        command: Option<String>,
        required: bool,
    ) -> Option<SecretSpec> {
        let mut given = Vec::new();
        if let Some(f) = file {
            given.push(("password_file", SecretSpec::File(self.resolve(&f))));
        }
        if let Some(e) = env {
            given.push(("password_env", SecretSpec::Env(e)));
        }
        if let Some(c) = cred {
            if c.contains('/') || c.is_empty() {
                let mut p = path.to_vec();
                p.push(Seg::K("password_credential"));
                self.issue(
                    &p,
                    "a credential name must be a plain name",
                    "give the name used in LoadCredential=NAME:… (no slashes)",
                );
            }
            given.push(("password_credential", SecretSpec::Credential(c)));
        }
        if let Some(c) = command {
            if c.trim().is_empty() {
                let mut p = path.to_vec();
                p.push(Seg::K("password_command"));
                self.issue(
                    &p,
                    "the command is empty",
                    "give the command that prints the password, e.g. password_command = \"aws kms decrypt --ciphertext-blob fileb:///etc/lifeboat/repo.pass.enc --query Plaintext --output text | base64 -d\"",
                );
            }
            given.push(("password_command", SecretSpec::Command(c)));
        }
        match given.len() {
            0 if required => {
                self.issue(
                    path,
                    "no password source",
                    "add one of password_file = \"/etc/lifeboat/repo.pass\", password_env = \"VAR\", password_credential = \"NAME\" or password_command = \"CMD\" (the password itself never goes in the plan)",
                );
                None
            }
            0 => None,
            1 => given.pop().map(|(_, s)| s),
            _ => {
                let mut p = path.to_vec();
                p.push(Seg::K(given[1].0));
                let names: Vec<_> = given.iter().map(|(n, _)| *n).collect();
                self.issue(
                    &p,
                    format!("several password sources given ({})", names.join(", ")),
                    "keep exactly one of them",
                );
                None
            }
        }
    }
}
