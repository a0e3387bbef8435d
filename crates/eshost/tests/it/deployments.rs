//! The store's record of what each host serves, on both stores: the live
//! version of a name is its newest deployment that was not refused, a
//! refusal is found again by its digest, the history pages newest first,
//! and a deployed component's bytes are kept once.

use crate::util::*;
use eshost::store::{ComponentKind, DeployAction, NewDeployment};

fn deployment(name: &str, version: &str, digest: &str, action: DeployAction) -> NewDeployment {
    NewDeployment {
        kind: ComponentKind::Aggregate,
        name: name.into(),
        version: version.into(),
        digest: digest.into(),
        action,
        reason: (action == DeployAction::Refused).then(|| "upgrade check failed: e.g.".into()),
        by: (action == DeployAction::Deployed).then(|| "ops".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_version_is_the_newest_not_refused_on_both_stores() {
    for db in [TestDb::postgres().await, TestDb::sqlite().await] {
        let store = eshost::store::open(&db.url).await.unwrap();
        let deployments = store.deployments();
        let aggregate = ComponentKind::Aggregate;
        assert!(
            deployments
                .live_deployments(aggregate)
                .await
                .unwrap()
                .is_empty()
        );

        let v1 = deployments
            .record_deployment(
                &deployment("Item", "0.1.0", "sha256:a1", DeployAction::Seeded),
                Some(b"one"),
            )
            .await
            .unwrap();
        assert_eq!(
            (v1.name.as_str(), v1.action, v1.by.as_deref()),
            ("Item", DeployAction::Seeded, None)
        );
        assert!(v1.at.ends_with('Z') && v1.at.contains('T'), "{}", v1.at);
        deployments
            .record_deployment(
                &deployment("Item", "0.2.0", "sha256:b2", DeployAction::Refused),
                None,
            )
            .await
            .unwrap();
        // A name whose only entry is a refusal has nothing live.
        deployments
            .record_deployment(
                &deployment("Other", "1.0.0", "sha256:c3", DeployAction::Refused),
                None,
            )
            .await
            .unwrap();
        let live = deployments.live_deployments(aggregate).await.unwrap();
        assert_eq!(live, vec![v1.clone()], "{}", db.url);

        let v3 = deployments
            .record_deployment(
                &deployment("Item", "0.3.0", "sha256:d4", DeployAction::Deployed),
                Some(b"three"),
            )
            .await
            .unwrap();
        assert!(v3.id > v1.id);
        assert_eq!(v3.by.as_deref(), Some("ops"));
        let live = deployments.live_deployments(aggregate).await.unwrap();
        assert_eq!(live, vec![v3.clone()]);
        // Rolled back: the old version is live again.
        deployments
            .record_deployment(
                &deployment("Item", "0.1.0", "sha256:a1", DeployAction::RolledBack),
                None,
            )
            .await
            .unwrap();
        let live = deployments.live_deployments(aggregate).await.unwrap();
        assert_eq!(
            (live[0].digest.as_str(), live[0].action),
            ("sha256:a1", DeployAction::RolledBack)
        );
        assert!(
            deployments
                .live_deployments(ComponentKind::Projection)
                .await
                .unwrap()
                .is_empty()
        );

        let refused = deployments
            .deployment_of(aggregate, "Item", "sha256:b2")
            .await
            .unwrap();
        assert_eq!(
            refused.map(|d| (d.action, d.reason.is_some())),
            Some((DeployAction::Refused, true))
        );
        let newest_of_a1 = deployments
            .deployment_of(aggregate, "Item", "sha256:a1")
            .await
            .unwrap();
        assert_eq!(
            newest_of_a1.map(|d| d.action),
            Some(DeployAction::RolledBack)
        );
        assert_eq!(
            deployments
                .deployment_of(aggregate, "Item", "sha256:zz")
                .await
                .unwrap(),
            None
        );

        let history = deployments
            .deployment_history(aggregate, "Item", None, 2)
            .await
            .unwrap();
        let versions: Vec<&str> = history.iter().map(|d| d.version.as_str()).collect();
        assert_eq!(versions, ["0.1.0", "0.3.0"]);
        let older = deployments
            .deployment_history(aggregate, "Item", Some(history[1].id), 10)
            .await
            .unwrap();
        let versions: Vec<&str> = older.iter().map(|d| d.version.as_str()).collect();
        assert_eq!(versions, ["0.2.0", "0.1.0"]);

        assert_eq!(
            deployments
                .component_bytes("sha256:a1")
                .await
                .unwrap()
                .as_deref(),
            Some(&b"one"[..])
        );
        assert_eq!(
            deployments.component_bytes("sha256:b2").await.unwrap(),
            None
        );
        drop(store);
        db.cleanup().await;
    }
}
