//! The SQL of [`Reactions`](super::Reactions), the same on both stores
//! (`$N` placeholders, `ON CONFLICT`): [`impl_reactions!`] implements the
//! role for a store; [`rows`](super::rows) reads what it selects.

/// A `SELECT` of parked events, the columns [`parked_event`](super::rows::parked_event) reads, with
/// the rest of the query after `FROM reactor_parked`.
macro_rules! select_parked {
    ($rest:literal) => {
        concat!(
            "SELECT reactor, position, event, reason, at_ms, retry_requested_at_ms \
             FROM reactor_parked ",
            $rest
        )
    };
}
pub(crate) use select_parked;

/// Rows one multi-row statement writes, at most: well within both stores'
/// limits on bound parameters (six a row).
pub(crate) const ROWS_PER_STATEMENT: usize = 500;

/// Implements [`Reactions`] for a store with a `pool` field (the SQL is the
/// same on PostgreSQL and SQLite).
macro_rules! impl_reactions {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::reactions::Reactions for $store {
            async fn reactor_checkpoint(
                &self,
                reactor: &str,
                version: &str,
                digest: &str,
                now_ms: i64,
            ) -> Result<$crate::reactions::Checkpoint, $crate::StoreError> {
                // Written only when the version that runs changes.
                sqlx::query(
                    "INSERT INTO reactors (name, version, digest, position, updated_at_ms) \
                     VALUES ($1, $2, $3, 0, $4) ON CONFLICT (name) DO UPDATE \
                     SET version = excluded.version, digest = excluded.digest, \
                         updated_at_ms = excluded.updated_at_ms \
                     WHERE reactors.digest <> excluded.digest",
                )
                .bind(reactor)
                .bind(version)
                .bind(digest)
                .bind(now_ms)
                .execute(&self.pool)
                .await?;
                self.read_checkpoint(reactor).await?.ok_or_else(|| {
                    $crate::reactions::rows::unreadable("reactor", "its row vanished once written")
                })
            }

            async fn read_checkpoint(
                &self,
                reactor: &str,
            ) -> Result<Option<$crate::reactions::Checkpoint>, $crate::StoreError> {
                use sqlx::Row;
                let row = sqlx::query(
                    "SELECT r.position, r.on_failure, \
                       (SELECT MIN(p.position) FROM reactor_parked p \
                        WHERE p.reactor = r.name AND p.position > r.position) AS stopped_at \
                     FROM reactors r WHERE r.name = $1",
                )
                .bind(reactor)
                .fetch_optional(&self.pool)
                .await?;
                let Some(row) = row else { return Ok(None) };
                Ok(Some($crate::reactions::Checkpoint {
                    position: row.try_get("position")?,
                    on_failure: $crate::reactions::rows::on_failure_from(row.try_get("on_failure")?)?,
                    stopped_at: row.try_get("stopped_at")?,
                }))
            }

            async fn set_on_failure(
                &self,
                reactor: &str,
                on_failure: $crate::reactions::OnFailure,
                now_ms: i64,
            ) -> Result<(), $crate::StoreError> {
                sqlx::query(
                    "INSERT INTO reactors (name, version, digest, position, updated_at_ms, on_failure) \
                     VALUES ($1, '', '', 0, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET on_failure = excluded.on_failure",
                )
                .bind(reactor)
                .bind(now_ms)
                .bind(on_failure.as_str())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn request_retry(
                &self,
                reactor: &str,
                position: Option<i64>,
                now_ms: i64,
            ) -> Result<u64, $crate::StoreError> {
                let asked = sqlx::query(
                    "UPDATE reactor_parked SET retry_requested_at_ms = $1 \
                     WHERE reactor = $2 AND ($3 IS NULL OR position = $3)",
                )
                .bind(now_ms)
                .bind(reactor)
                .bind(position)
                .execute(&self.pool)
                .await?;
                Ok(asked.rows_affected())
            }

            async fn retries_requested(
                &self,
                reactor: &str,
                limit: u64,
            ) -> Result<Vec<$crate::reactions::ParkedEvent>, $crate::StoreError> {
                let rows = sqlx::query(
                    $crate::reactions::sql::select_parked!(
                     "WHERE reactor = $1 AND retry_requested_at_ms IS NOT NULL \
                     ORDER BY position LIMIT $2"
                    ),
                )
                .bind(reactor)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|row| $crate::reactions::rows::parked_event(row)).collect()
            }

            async fn record_retry(
                &self,
                reactor: &str,
                reaction: &$crate::reactions::Reaction,
                now_ms: i64,
            ) -> Result<bool, $crate::StoreError> {
                let mut tx = self.pool.begin().await?;
                let actions = match &reaction.outcome {
                    Ok(actions) => actions,
                    Err(reason) => {
                        let parked = sqlx::query(
                            "UPDATE reactor_parked SET reason = $1, at_ms = $2, retry_requested_at_ms = NULL \
                             WHERE reactor = $3 AND position = $4 AND retry_requested_at_ms IS NOT NULL",
                        )
                        .bind(reason)
                        .bind(now_ms)
                        .bind(reactor)
                        .bind(reaction.position)
                        .execute(&mut *tx)
                        .await?;
                        tx.commit().await?;
                        return Ok(parked.rows_affected() == 1);
                    }
                };
                let unparked = sqlx::query(
                    "DELETE FROM reactor_parked \
                     WHERE reactor = $1 AND position = $2 AND retry_requested_at_ms IS NOT NULL",
                )
                .bind(reactor)
                .bind(reaction.position)
                .execute(&mut *tx)
                .await?;
                if unparked.rows_affected() == 0 {
                    return Ok(false);
                }
                Self::record_actions(
                    &mut tx,
                    reactor,
                    &[(reaction.position, reaction.recorded_at_ms, actions.as_slice())],
                )
                .await?;
                sqlx::query(
                    "UPDATE reactors SET position = $1, updated_at_ms = $2 \
                     WHERE name = $3 AND position < $1",
                )
                .bind(reaction.position)
                .bind(now_ms)
                .bind(reactor)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn record_reactions(
                &self,
                page: &$crate::reactions::ReactionPage<'_>,
            ) -> Result<bool, $crate::StoreError> {
                let mut tx = self.pool.begin().await?;
                let moved = sqlx::query(
                    "UPDATE reactors SET position = $1, version = $2, digest = $3, updated_at_ms = $4 \
                     WHERE name = $5 AND position = $6",
                )
                .bind(page.to)
                .bind(page.version)
                .bind(page.digest)
                .bind(page.now_ms)
                .bind(page.reactor)
                .bind(page.from)
                .execute(&mut *tx)
                .await?;
                if moved.rows_affected() == 0 {
                    return Ok(false);
                }
                let mut reacted = Vec::with_capacity(page.reactions.len());
                for reaction in page.reactions {
                    match &reaction.outcome {
                        Ok(actions) => {
                            reacted.push((reaction.position, reaction.recorded_at_ms, actions.as_slice()));
                        }
                        Err(reason) => {
                            sqlx::query(
                                "INSERT INTO reactor_parked (reactor, position, event, reason, at_ms) \
                                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (reactor, position) DO NOTHING",
                            )
                            .bind(page.reactor)
                            .bind(reaction.position)
                            .bind(&reaction.event)
                            .bind(reason)
                            .bind(page.now_ms)
                            .execute(&mut *tx)
                            .await?;
                        }
                    }
                }
                Self::record_actions(&mut tx, page.reactor, &reacted).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn pending_actions(
                &self,
                reactor: &str,
                now_ms: i64,
                limit: u64,
            ) -> Result<Vec<$crate::reactions::OutboxEntry>, $crate::StoreError> {
                let rows = sqlx::query(
                    // In the order they were recorded: one position's ids
                    // differ only in their last part, the action's index,
                    // so the shorter id comes first ("...:9" before "...:10").
                    "SELECT id, reactor, position, action, attempts FROM reaction_actions \
                     WHERE reactor = $1 AND status = 'pending' AND next_at_ms <= $2 \
                     ORDER BY position, length(id), id LIMIT $3",
                )
                .bind(reactor)
                .bind(now_ms)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|row| $crate::reactions::rows::outbox_entry(row)).collect()
            }

            async fn settle_actions(
                &self,
                settled: &[$crate::reactions::Settlement],
            ) -> Result<(), $crate::StoreError> {
                if settled.is_empty() {
                    return Ok(());
                }
                let mut tx = self.pool.begin().await?;
                for rows in settled.chunks($crate::reactions::sql::ROWS_PER_STATEMENT) {
                    // A VALUES list's columns are column1, column2, ... on
                    // both stores.
                    let mut update = sqlx::QueryBuilder::<$db>::new(
                        "UPDATE reaction_actions SET status = v.column2, outcome = v.column3, \
                         next_at_ms = v.column4, attempts = attempts + 1 FROM (",
                    );
                    update.push_values(rows, |mut row, settlement| {
                        row.push_bind(&settlement.id)
                            .push_bind(settlement.status.as_str())
                            .push_bind(&settlement.outcome)
                            .push_bind(settlement.retry_at_ms);
                    });
                    update.push(") AS v WHERE reaction_actions.id = v.column1");
                    update.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn action(
                &self,
                id: &str,
            ) -> Result<
                Option<(
                    $crate::reactions::OutboxEntry,
                    $crate::reactions::ActionStatus,
                    Option<String>,
                )>,
                $crate::StoreError,
            > {
                use sqlx::Row;
                let row = sqlx::query(
                    "SELECT id, reactor, position, action, attempts, status, outcome \
                     FROM reaction_actions WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let status: String = row.try_get("status")?;
                Ok(Some((
                    $crate::reactions::rows::outbox_entry(&row)?,
                    $crate::reactions::rows::status_from(&status)?,
                    row.try_get("outcome")?,
                )))
            }

            async fn due_timers(
                &self,
                reactor: &str,
                now_ms: i64,
                limit: u64,
            ) -> Result<Vec<$crate::reactions::Timer>, $crate::StoreError> {
                let rows = sqlx::query(
                    "SELECT reactor, key, id, position, due_at_ms, command FROM reactor_timers \
                     WHERE reactor = $1 AND due_at_ms <= $2 ORDER BY due_at_ms, key LIMIT $3",
                )
                .bind(reactor)
                .bind(now_ms)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|row| $crate::reactions::rows::timer(row)).collect()
            }

            async fn fire_timer(
                &self,
                timer: &$crate::reactions::Timer,
            ) -> Result<bool, $crate::StoreError> {
                let mut tx = self.pool.begin().await?;
                let taken = sqlx::query(
                    "DELETE FROM reactor_timers WHERE reactor = $1 AND key = $2 AND id = $3",
                )
                .bind(&timer.reactor)
                .bind(&timer.key)
                .bind(&timer.id)
                .execute(&mut *tx)
                .await?;
                if taken.rows_affected() == 0 {
                    return Ok(false);
                }
                let send = eshost_core::Action::Send(timer.command.clone());
                sqlx::query(
                    "INSERT INTO reaction_actions (id, reactor, position, action, status) \
                     VALUES ($1, $2, $3, $4, 'pending') ON CONFLICT (id) DO NOTHING",
                )
                .bind(&timer.id)
                .bind(&timer.reactor)
                .bind(timer.position)
                .bind($crate::reactions::rows::to_json(&send))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn timers(
                &self,
                reactor: &str,
            ) -> Result<Vec<$crate::reactions::Timer>, $crate::StoreError> {
                let rows = sqlx::query(
                    "SELECT reactor, key, id, position, due_at_ms, command FROM reactor_timers \
                     WHERE reactor = $1 ORDER BY due_at_ms, key",
                )
                .bind(reactor)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|row| $crate::reactions::rows::timer(row)).collect()
            }

            async fn parked_events(
                &self,
                reactor: &str,
            ) -> Result<Vec<$crate::reactions::ParkedEvent>, $crate::StoreError> {
                let rows = sqlx::query(
                    $crate::reactions::sql::select_parked!(
                     "WHERE reactor = $1 ORDER BY position"
                    ),
                )
                .bind(reactor)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|row| $crate::reactions::rows::parked_event(row)).collect()
            }

            async fn take_lease(
                &self,
                reactor: &str,
                holder: &str,
                now_ms: i64,
                ttl_ms: i64,
            ) -> Result<bool, $crate::StoreError> {
                let taken = sqlx::query(
                    "INSERT INTO reactor_leases (reactor, holder, until_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT (reactor) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms \
                     WHERE reactor_leases.holder = excluded.holder OR reactor_leases.until_ms < $4",
                )
                .bind(reactor)
                .bind(holder)
                .bind(now_ms.saturating_add(ttl_ms))
                .bind(now_ms)
                .execute(&self.pool)
                .await?;
                Ok(taken.rows_affected() == 1)
            }

            async fn reactors(
                &self,
            ) -> Result<Vec<$crate::reactions::ReactorRecord>, $crate::StoreError> {
                let rows = sqlx::query(
                    "SELECT name, version, digest, position, updated_at_ms, on_failure \
                     FROM reactors ORDER BY name",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|row| $crate::reactions::rows::reactor_record(row)).collect()
            }

            async fn reactor_counts(
                &self,
                reactor: &str,
            ) -> Result<$crate::reactions::ReactorCounts, $crate::StoreError> {
                Ok($crate::reactions::ReactorCounts {
                    parked: self
                        .count_for_reactor("SELECT COUNT(*) FROM reactor_parked WHERE reactor = $1", reactor)
                        .await?,
                    timers: self
                        .count_for_reactor("SELECT COUNT(*) FROM reactor_timers WHERE reactor = $1", reactor)
                        .await?,
                    pending: self
                        .count_for_reactor(
                            "SELECT COUNT(*) FROM reaction_actions WHERE reactor = $1 AND status = 'pending'",
                            reactor,
                        )
                        .await?,
                })
            }
        }

        impl $store {
            async fn count_for_reactor(&self, sql: &str, reactor: &str) -> Result<u64, $crate::StoreError> {
                let (count,): (i64,) = sqlx::query_as(sql).bind(reactor).fetch_one(&self.pool).await?;
                Ok(u64::try_from(count).unwrap_or_default())
            }

            /// Puts one reaction's commands and deliveries in the outbox,
            /// and schedules and cancels its timers, in order.
            /// Records the actions of `reacted` reactions (each event's
            /// position, when it was recorded, and its actions) in `tx`,
            /// in a few multi-row statements: the outbox rows; then each
            /// timer key's last change in the page (a schedule replaces a
            /// key's timer whole and a cancel removes it, so the last
            /// change alone decides what is left).
            async fn record_actions(
                tx: &mut sqlx::Transaction<'_, $db>,
                reactor: &str,
                reacted: &[(i64, i64, &[eshost_core::Action])],
            ) -> Result<(), $crate::StoreError> {
                use eshost_core::Action;
                use $crate::reactions::{rows::to_json, sql::ROWS_PER_STATEMENT};
                let mut outbox: Vec<(String, i64, String)> = Vec::new();
                // Each key's last change: a timer (id, position, due, command) or none.
                let mut timers: std::collections::BTreeMap<&str, Option<(String, i64, i64, String)>> =
                    std::collections::BTreeMap::new();
                for &(position, recorded_at_ms, actions) in reacted {
                    for (index, action) in actions.iter().enumerate() {
                        let id = eshost_core::action_id(reactor, position, index);
                        match action {
                            Action::Send(_) | Action::Deliver(_) => {
                                outbox.push((id, position, to_json(action)));
                            }
                            Action::Schedule(scheduled) => {
                                let due = scheduled.due.at(recorded_at_ms);
                                let command = to_json(&scheduled.command);
                                timers.insert(&scheduled.key, Some((id, position, due, command)));
                            }
                            Action::Cancel(key) => {
                                timers.insert(key, None);
                            }
                        }
                    }
                }
                for rows in outbox.chunks(ROWS_PER_STATEMENT) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO reaction_actions (id, reactor, position, action, status) ",
                    );
                    insert.push_values(rows, |mut row, (id, position, action)| {
                        row.push_bind(id)
                            .push_bind(reactor)
                            .push_bind(*position)
                            .push_bind(action)
                            .push("'pending'");
                    });
                    insert.push(" ON CONFLICT (id) DO NOTHING");
                    insert.build().execute(&mut **tx).await?;
                }
                let cancelled: Vec<&str> = timers
                    .iter()
                    .filter(|(_, timer)| timer.is_none())
                    .map(|(key, _)| *key)
                    .collect();
                for keys in cancelled.chunks(ROWS_PER_STATEMENT) {
                    let mut delete =
                        sqlx::QueryBuilder::<$db>::new("DELETE FROM reactor_timers WHERE reactor = ");
                    delete.push_bind(reactor).push(" AND key IN (");
                    let mut listed = delete.separated(", ");
                    for key in keys {
                        listed.push_bind(*key);
                    }
                    listed.push_unseparated(")");
                    delete.build().execute(&mut **tx).await?;
                }
                let scheduled: Vec<(&str, &(String, i64, i64, String))> = timers
                    .iter()
                    .filter_map(|(key, timer)| Some((*key, timer.as_ref()?)))
                    .collect();
                for rows in scheduled.chunks(ROWS_PER_STATEMENT) {
                    let mut upsert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO reactor_timers (reactor, key, id, position, due_at_ms, command) ",
                    );
                    upsert.push_values(rows, |mut row, (key, (id, position, due, command))| {
                        row.push_bind(reactor)
                            .push_bind(*key)
                            .push_bind(id)
                            .push_bind(*position)
                            .push_bind(*due)
                            .push_bind(command);
                    });
                    upsert.push(
                        " ON CONFLICT (reactor, key) DO UPDATE \
                         SET id = excluded.id, position = excluded.position, \
                             due_at_ms = excluded.due_at_ms, command = excluded.command",
                    );
                    upsert.build().execute(&mut **tx).await?;
                }
                Ok(())
            }
        }
    };
}
pub(crate) use impl_reactions;
