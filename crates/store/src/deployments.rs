//! What each host serves, recorded in the store: the components deployed
//! (their bytes kept once per digest, so any host can load them) and the
//! history of deployments. What is live for a name is its newest
//! deployment that was not refused; a refusal is recorded once per digest,
//! so no host checks that component again.

use crate::error::StoreError;
use async_trait::async_trait;
pub use eshost_core::{ComponentKind, DeployAction, Deployment};

/// A deployment about to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeployment {
    pub kind: ComponentKind,
    pub name: String,
    pub version: String,
    /// `sha256:` and the component's hex digest.
    pub digest: String,
    pub action: DeployAction,
    /// Why it was refused.
    pub reason: Option<String>,
    /// The name of the token that deployed it.
    pub by: Option<String>,
}

/// The most entries one read of a history returns.
pub const MAX_HISTORY_PAGE: u64 = 1_000;

/// What each host serves, and how it came to.
#[async_trait]
pub trait Deployments: Send + Sync {
    /// Records a deployment and, when given, the component's bytes (kept
    /// once per digest), in one transaction. Returns the entry as
    /// recorded, with its id and time.
    async fn record_deployment(
        &self,
        deployment: &NewDeployment,
        bytes: Option<&[u8]>,
    ) -> Result<Deployment, StoreError>;

    /// What is live: for each name of `kind`, its newest deployment that
    /// was not refused, in name order.
    async fn live_deployments(&self, kind: ComponentKind) -> Result<Vec<Deployment>, StoreError>;

    /// The newest entry for this name and digest, whatever it did: tells a
    /// component seen before (refused, or superseded) from a new one.
    async fn deployment_of(
        &self,
        kind: ComponentKind,
        name: &str,
        digest: &str,
    ) -> Result<Option<Deployment>, StoreError>;

    /// A name's entries, newest first, with ids below `before` (all when
    /// `None`), at most `limit` (and [`MAX_HISTORY_PAGE`]) of them.
    async fn deployment_history(
        &self,
        kind: ComponentKind,
        name: &str,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<Deployment>, StoreError>;

    /// The bytes of the component with this digest, if they were kept.
    async fn component_bytes(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

/// What a rollback of a name would bring back.
#[derive(Debug)]
pub enum RollbackTarget {
    /// Nothing of that name is deployed.
    NotDeployed,
    /// The live version (given) is the only one ever deployed.
    OnlyVersion(Deployment),
    /// The version live before the current one, with its bytes if the
    /// store keeps them.
    Earlier(Deployment, Option<Vec<u8>>),
}

/// The version of `name` live before its current one (see
/// [`RollbackTarget`]): the newest entry that went live with another digest
/// than the live one.
pub async fn rollback_target(
    deployments: &dyn Deployments,
    kind: ComponentKind,
    name: &str,
) -> Result<RollbackTarget, StoreError> {
    let history = deployments
        .deployment_history(kind, name, None, MAX_HISTORY_PAGE)
        .await?;
    let mut went_live = history.into_iter().filter(|d| d.action.goes_live());
    let Some(live) = went_live.next() else {
        return Ok(RollbackTarget::NotDeployed);
    };
    let Some(earlier) = went_live.find(|d| d.digest != live.digest) else {
        return Ok(RollbackTarget::OnlyVersion(live));
    };
    let bytes = deployments.component_bytes(&earlier.digest).await?;
    Ok(RollbackTarget::Earlier(earlier, bytes))
}

/// Where a component loaded from the store comes from, in messages:
/// `store/{name}@{digest}`.
pub fn origin(deployment: &Deployment) -> std::path::PathBuf {
    std::path::Path::new("store").join(format!("{}@{}", deployment.name, deployment.digest))
}

/// The columns every read of `deployments` selects, in the order
/// [`deployment_from`] reads them; `at` is rendered by each store.
pub(crate) const COLUMNS: &str = "id, kind, name, version, digest, action, reason, by_token";

/// A row of `deployments` (with `at` as RFC 3339 text) as a [`Deployment`].
pub(crate) fn deployment_from<R: sqlx::Row>(row: &R) -> Result<Deployment, StoreError>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    let unreadable = |what: String| StoreError::Database {
        failure: crate::DatabaseFailure::Permanent,
        message: what,
    };
    let kind: String = row.try_get("kind")?;
    let action: String = row.try_get("action")?;
    Ok(Deployment {
        id: row.try_get("id")?,
        kind: ComponentKind::parse(&kind)
            .ok_or_else(|| unreadable(format!("a deployment of unknown kind {kind:?}")))?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        digest: row.try_get("digest")?,
        action: DeployAction::parse(&action)
            .ok_or_else(|| unreadable(format!("a deployment with unknown action {action:?}")))?,
        reason: row.try_get("reason")?,
        by: row.try_get("by_token")?,
        at: row.try_get("at")?,
    })
}
