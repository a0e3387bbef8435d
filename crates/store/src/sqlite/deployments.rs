//! [`Deployments`] in SQLite.

use super::SqliteStore;
use crate::deployments::{COLUMNS, Deployments, MAX_HISTORY_PAGE, NewDeployment, deployment_from};
use crate::error::StoreError;
use async_trait::async_trait;
use eshost_core::{ComponentKind, DeployAction, Deployment};

/// `at`, stored as RFC 3339 text.
const AT: &str = "at";

fn select(rest: &str) -> String {
    format!("SELECT {COLUMNS}, {AT} FROM deployments {rest}")
}

#[async_trait]
impl Deployments for SqliteStore {
    async fn record_deployment(
        &self,
        deployment: &NewDeployment,
        bytes: Option<&[u8]>,
    ) -> Result<Deployment, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(bytes) = bytes {
            sqlx::query(
                "INSERT INTO components (digest, bytes) VALUES (?, ?) ON CONFLICT (digest) DO NOTHING",
            )
            .bind(&deployment.digest)
            .bind(bytes)
            .execute(&mut *tx)
            .await?;
        }
        let insert = format!(
            "INSERT INTO deployments (kind, name, version, digest, action, reason, by_token) \
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {COLUMNS}, {AT}"
        );
        let row = sqlx::query(&insert)
            .bind(deployment.kind.as_str())
            .bind(&deployment.name)
            .bind(&deployment.version)
            .bind(&deployment.digest)
            .bind(deployment.action.as_str())
            .bind(&deployment.reason)
            .bind(&deployment.by)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        deployment_from(&row)
    }

    async fn live_deployments(&self, kind: ComponentKind) -> Result<Vec<Deployment>, StoreError> {
        let query = select(
            "WHERE id IN (SELECT max(id) FROM deployments WHERE kind = ? AND action <> ? GROUP BY name) \
             ORDER BY name",
        );
        let rows = sqlx::query(&query)
            .bind(kind.as_str())
            .bind(DeployAction::Refused.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(deployment_from).collect()
    }

    async fn deployment_of(
        &self,
        kind: ComponentKind,
        name: &str,
        digest: &str,
    ) -> Result<Option<Deployment>, StoreError> {
        let query = select("WHERE kind = ? AND name = ? AND digest = ? ORDER BY id DESC LIMIT 1");
        let row = sqlx::query(&query)
            .bind(kind.as_str())
            .bind(name)
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(deployment_from).transpose()
    }

    async fn deployment_history(
        &self,
        kind: ComponentKind,
        name: &str,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<Deployment>, StoreError> {
        let query = select("WHERE kind = ? AND name = ? AND id < ? ORDER BY id DESC LIMIT ?");
        let rows = sqlx::query(&query)
            .bind(kind.as_str())
            .bind(name)
            .bind(before.unwrap_or(i64::MAX))
            .bind(crate::to_i64(limit.min(MAX_HISTORY_PAGE)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(deployment_from).collect()
    }

    async fn component_bytes(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT bytes FROM components WHERE digest = ?")
                .bind(digest)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}
