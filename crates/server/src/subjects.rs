//! Forgetting data subjects (decision record 0056): `POST /v1/admin/forget`,
//! and the follower that keeps this host's cached states free of subjects
//! another host (or `eshost forget`) forgot.

use crate::App;
use crate::error::ApiError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use eshost::Host;
use eshost_api::{ForgetAnswer, ForgetRequest, Problem};
use eshost_core::erasure::{SUBJECT_FORGOTTEN, SUBJECTS_AGGREGATE};
use eshost_core::{StreamId, SubjectForgotten};
use eshost_read::subscription::{Subscription, follow_with};
use futures_util::StreamExt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The longest subject id a forget takes.
pub const MAX_SUBJECT_BYTES: usize = 1_024;

/// `POST /v1/admin/forget`: forget a data subject.
#[utoipa::path(
    post,
    path = "/v1/admin/forget",
    operation_id = "forget_subject",
    summary = "Forget a data subject: record the erasure, delete their key and their streams' snapshots",
    description = "Every field a guest declares as the subject's personal data reads as \
        `{\"$forgotten\": PSEUDONYM}` from then on, everywhere. Safe to repeat: a forget that was \
        interrupted is finished, and one that finished answers `forgotten: false`.",
    request_body(content = ForgetRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Forgotten, or nothing left to forget", body = ForgetAnswer),
        (status = 409, description = "`no_master_key`: the store keeps personal data as written", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not `{\"subject\": ID}`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store failed for now; forget again", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "Not finished in time; forget again", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "admin"
)]
pub async fn forget(State(app): State<App>, body: Bytes) -> Result<Json<ForgetAnswer>, ApiError> {
    let request: ForgetRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_payload",
            format!("a forget is {{\"subject\": ID}}: {e}"),
        )
    })?;
    let subject = request.subject;
    if subject.is_empty() || subject.len() > MAX_SUBJECT_BYTES {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_id",
            format!("a subject id is 1 to {MAX_SUBJECT_BYTES} bytes"),
        ));
    }
    if !app.host.store().keeps_personal_data() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_master_key",
            "this server has no master key (ESHOST_MASTER_KEY_FILE): its store keeps personal \
             data as written and cannot forget it",
        ));
    }
    // A forget is safe to run again, so one that takes too long is
    // answered as such and finished by the next.
    let erasure = tokio::time::timeout(app.config.command_timeout, app.host.forget(&subject))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "the forget did not finish in time; forget again to finish it",
            )
        })??;
    match &erasure {
        Some(erasure) => info!(
            pseudonym = %erasure.pseudonym,
            streams = erasure.streams.len(),
            snapshots_deleted = erasure.snapshots_deleted,
            "forgot a data subject"
        ),
        None => info!("a forget found nothing left to forget"),
    }
    Ok(Json(ForgetAnswer {
        forgotten: erasure.is_some(),
        erasure,
    }))
}

/// How long the follower waits before it reads the log again after an
/// error it could not wait out.
const RESTART_AFTER: Duration = Duration::from_secs(1);

/// Follows the erasures recorded after now and drops the cached states of
/// the streams each names, until `stop`; reads the log once every
/// [`MAX_SIGNAL_WAIT`](eshost_read::subscription::MAX_SIGNAL_WAIT). The host's store learns of each erasure as it reads
/// it (its cached keys of the subject go), so the states hydrated again
/// hold the subject's tombstones.
pub async fn follow_erasures(host: Host, stop: CancellationToken) {
    let mut after = None;
    while !stop.is_cancelled() {
        let start = match after {
            Some(position) => position,
            None => match host
                .store()
                .log()
                .tail_start(0, Some(SUBJECTS_AGGREGATE))
                .await
            {
                Ok(position) => position,
                Err(e) => {
                    warn!(error = %e, "cannot find where the log's erasures end; trying again");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(RESTART_AFTER) => continue,
                    }
                }
            },
        };
        after = Some(start);
        let from = Subscription {
            after: start,
            aggregate: Some(SUBJECTS_AGGREGATE.to_owned()),
        };
        // Read once per MAX_SIGNAL_WAIT, not at every append: erasures are
        // rare, and a busy host's appends would each cost a query.
        let signal = Box::new(eshost_store::Unhurried);
        let mut erasures = Box::pin(follow_with(host.store().clone(), from, Some(signal)));
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                next = erasures.next() => next,
            };
            match next {
                Some(Ok(event)) => {
                    after = Some(event.position);
                    if event.name != SUBJECT_FORGOTTEN {
                        continue;
                    }
                    match serde_json::from_str::<SubjectForgotten>(event.payload.as_str()) {
                        Ok(erased) => {
                            let streams: Vec<StreamId> =
                                erased.streams.iter().map(StreamId::from).collect();
                            host.drop_erased(&streams);
                        }
                        Err(e) => warn!(
                            position = event.position,
                            error = %e,
                            "an erasure event this host cannot read"
                        ),
                    }
                }
                Some(Err(e)) => {
                    warn!(error = %e, "following the log's erasures failed; following again");
                    break;
                }
                None => break,
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RESTART_AFTER) => {}
        }
    }
}
