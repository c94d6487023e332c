//! The repository itself: `init` (a new repository in every region of the target) and its
//! key slots (`key list`, `key add`, `key remove`).

use std::sync::Arc;

use super::target::Target;
use crate::ids::ObjectId;
use crate::repo::keys::{KdfParams, KeyFile};
use crate::repo::{InitOptions, Repository};
use crate::store::multi::MultiStore;
use crate::{Error, Result};

/// A new repository, and the fan-out it was written through (several regions).
pub struct Created {
    pub repo: Repository,
    pub fanout: Option<Arc<MultiStore>>,
}

/// Creates a repository at the target; refuses a location that already holds one.
pub async fn init(target: &Target, opts: InitOptions) -> Result<Created> {
    let (store, fanout) = target.store_for_write()?;
    if store.head("config").await?.is_some() {
        return Err(Error::RepoExists {
            location: store.describe(),
        });
    }
    // A destination asking for Object Lock must have a bucket that enforces it.
    if let Err(e) = store.check_lock_support().await {
        return Err(match e {
            crate::store::StoreError::Permanent { detail, .. } => {
                Error::Config(format!("{}: {detail}", store.describe()))
            }
            other => other.into(),
        });
    }
    let pw = target.password(&store.describe(), true)?;
    let repo = Repository::init(store, pw.as_bytes(), opts).await?;
    // The report-signing key, wrapped by the new master key (every region, like the rest).
    crate::repo::signing::create_in(&repo).await?;
    Ok(Created { repo, fanout })
}

/// The key slots, and which one opened the repository.
pub async fn list(repo: &Repository) -> Result<Vec<(ObjectId, KeyFile)>> {
    repo.list_keys().await
}

/// Adds a key slot for `password` (verified: it opens the repository).
pub async fn add(repo: &Repository, password: &[u8], kdf: KdfParams) -> Result<ObjectId> {
    repo.with_lock("key add", false, async |_| {
        repo.add_key(password, kdf).await
    })
    .await
}

/// Removes the key slot whose id starts with `prefix` (not the one in use, never the last).
pub async fn remove(repo: &Repository, prefix: &str) -> Result<ObjectId> {
    let keys = repo.list_keys().await?;
    let q = prefix.to_ascii_lowercase();
    let hits: Vec<_> = keys
        .iter()
        .filter(|(id, _)| id.to_hex().starts_with(&q))
        .collect();
    let id = match hits.as_slice() {
        [(id, _)] => *id,
        [] => {
            return Err(Error::Usage(format!(
                "no key slot matches {prefix:?}; `lifeboat key list` shows them"
            )))
        }
        _ => {
            return Err(Error::Usage(format!(
                "key prefix {prefix:?} is ambiguous; give more characters"
            )))
        }
    };
    repo.with_lock("key remove", true, async |_| repo.remove_key(&id).await)
        .await?;
    Ok(id)
}
