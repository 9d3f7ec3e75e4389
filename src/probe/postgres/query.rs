//! What every probe that asks PostgreSQL "how old is the oldest change not yet applied?" shares:
//! the run's read-only transaction with a statement timeout, planning a statement without
//! running it, passing a value as `$1` in the parameter's own binary form, and reading the
//! `oldest_pending` answer (a timestamp and an optional count) against the database's own clock.

use std::error::Error as StdError;
use std::time::SystemTime;

use bytes::BytesMut;
use tokio::time::Instant;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Row, Transaction};

use super::{PooledClient, query_error};
use crate::sample::{ErrorReason, ProbeError};

/// Ends a run's work on `client`: the answer, or the error; a run that did not finish by its
/// deadline is `timeout` with `timed_out` as its message. Only a successful run returns the
/// connection to the pool: after an error its state is unknown.
pub fn settle<T>(
    client: PooledClient<'_>,
    outcome: Result<Result<T, ProbeError>, tokio::time::error::Elapsed>,
    timed_out: &str,
) -> Result<T, ProbeError> {
    match outcome {
        Ok(Ok(answer)) => {
            client.release();
            Ok(answer)
        }
        Ok(Err(error)) => Err(error),
        Err(_) => Err(ProbeError::new(ErrorReason::Timeout, timed_out)),
    }
}

/// Runs `work` in the run's read-only transaction (see [`begin`]) on a connection of `pool`,
/// all by `deadline`, and rolls back: what every reading probe does around its statements.
/// A run that does not finish in time is `timeout` with `timed_out` as its message; only a
/// successful one returns the connection to the pool (see [`settle`]).
pub async fn read_only<T>(
    pool: &super::PgPool,
    deadline: Instant,
    timed_out: &str,
    work: impl AsyncFnOnce(&Transaction<'_>) -> Result<T, ProbeError>,
) -> Result<T, ProbeError> {
    let mut client = pool.get(deadline).await?;
    let outcome = tokio::time::timeout_at(deadline, async {
        let tx = begin(&mut client, deadline).await?;
        let answer = work(&tx).await?;
        tx.rollback().await.map_err(|e| query_error(&e))?;
        Ok(answer)
    })
    .await;
    settle(client, outcome, timed_out)
}

/// A pending count with no oldest time contradicts itself: lag cannot be taken as 0.
pub fn count_without_time(oldest_is_null: bool, count: Option<i64>) -> Result<(), ProbeError> {
    match count {
        Some(n) if oldest_is_null && n > 0 => Err(ProbeError::new(
            ErrorReason::Decode,
            format!("{n} changes pending but their oldest timestamp is NULL"),
        )),
        _ => Ok(()),
    }
}

/// Opens the run's read-only transaction, with a statement timeout that ends at the deadline
/// so that a slow query is cancelled by the server rather than abandoned mid-flight.
pub async fn begin<'c>(
    client: &'c mut tokio_postgres::Client,
    deadline: Instant,
) -> Result<Transaction<'c>, ProbeError> {
    let tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(|e| query_error(&e))?;
    let remaining_ms = deadline
        .saturating_duration_since(crate::clock::instant())
        .as_millis()
        .max(1);
    tx.batch_execute(&format!("SET LOCAL statement_timeout = {remaining_ms}"))
        .await
        .map_err(|e| query_error(&e))?;
    Ok(tx)
}

/// Plans `sql` (with NULL parameters) without running it: preparing does not check table
/// privileges; planning does.
pub async fn explain(tx: &Transaction<'_>, sql: &str) -> Result<(), ProbeError> {
    let statement = tx
        .prepare(&format!("EXPLAIN {sql}"))
        .await
        .map_err(|e| query_error(&e))?;
    let nulls: Vec<Option<EncodedParam>> = statement.params().iter().map(|_| None).collect();
    let params: Vec<&(dyn ToSql + Sync)> = nulls.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    tx.query(&statement, &params)
        .await
        .map_err(|e| query_error(&e))?;
    Ok(())
}

/// A parameter already encoded in the binary form of the statement's parameter type.
#[derive(Debug)]
pub struct EncodedParam(pub Vec<u8>);

impl ToSql for EncodedParam {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// What an `oldest_pending` query answered.
pub struct Pending {
    /// Seconds between the oldest pending change and the database's clock, 0 when nothing is
    /// pending.
    pub lag_seconds: f64,
    /// The result was below zero (the change is "in the future" of the database's clock) and
    /// was clamped.
    pub negative_lag_clamped: bool,
    /// The pending count, when the query returns one.
    pub count: Option<i64>,
}

/// Reads the rows of an `oldest_pending` query: none, or one row of a timestamp (NULL when
/// nothing is pending) and an optional integer count. The age is taken on the database's
/// clock, in the same transaction.
pub async fn read_pending(tx: &Transaction<'_>, rows: &[Row]) -> Result<Pending, ProbeError> {
    // No row at all reads as "nothing pending": `ORDER BY … LIMIT 1` styles return none.
    let row = match rows {
        [] => {
            return Ok(Pending {
                lag_seconds: 0.0,
                negative_lag_clamped: false,
                count: None,
            });
        }
        [row] => row,
        more => {
            // Taking the first of several rows could understate the lag.
            return Err(ProbeError::new(
                ErrorReason::Decode,
                format!(
                    "oldest_pending returned {} rows, expected at most one (use min(…) or ORDER BY … LIMIT 1)",
                    more.len()
                ),
            ));
        }
    };
    let columns = row.columns();
    let ty = columns
        .first()
        .map(|c| c.type_().clone())
        .ok_or_else(|| ProbeError::new(ErrorReason::Decode, "oldest_pending returned no column"))?;
    let oldest = read_time(
        row,
        0,
        &ty,
        "oldest_pending must return a timestamp or timestamptz first",
    )?;
    let count = match columns.get(1).map(|c| c.type_().clone()) {
        None => None,
        Some(ty) => Some(read_count(row, &ty)?),
    };
    count_without_time(oldest.is_none(), count)?;
    let (lag_seconds, negative_lag_clamped) = match oldest {
        None => (0.0, false),
        Some(at) => seconds_between(at, db_now(tx, &ty).await?),
    };
    Ok(Pending {
        lag_seconds,
        negative_lag_clamped,
        count: count.map(|n| n.max(0)),
    })
}

/// Column `index` of `row` as a time, when it is a `timestamp` or `timestamptz`; NULL is
/// `None`. `what` opens the error for any other type.
pub fn read_time(
    row: &Row,
    index: usize,
    ty: &Type,
    what: &str,
) -> Result<Option<SystemTime>, ProbeError> {
    if *ty != Type::TIMESTAMPTZ && *ty != Type::TIMESTAMP {
        return Err(ProbeError::new(
            ErrorReason::Decode,
            format!("{what}, got {}", ty.name()),
        ));
    }
    row.try_get::<_, Option<SystemTime>>(index)
        .map_err(|e| ProbeError::new(ErrorReason::Decode, e.to_string()))
}

fn read_count(row: &Row, ty: &Type) -> Result<i64, ProbeError> {
    let decode = |e: tokio_postgres::Error| ProbeError::new(ErrorReason::Decode, e.to_string());
    let value = if *ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(1).map_err(decode)?
    } else if *ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(1)
            .map_err(decode)?
            .map(i64::from)
    } else if *ty == Type::INT2 {
        row.try_get::<_, Option<i16>>(1)
            .map_err(decode)?
            .map(i64::from)
    } else {
        return Err(ProbeError::new(
            ErrorReason::Decode,
            format!(
                "the pending count must be an integer, got {}; cast it with ::bigint",
                ty.name()
            ),
        ));
    };
    // count(*) is never NULL; a NULL count from another expression means "none".
    Ok(value.unwrap_or(0))
}

/// `now − then` in seconds, clamped at 0; the flag says whether clamping happened.
pub fn seconds_between(then: SystemTime, now: SystemTime) -> (f64, bool) {
    match now.duration_since(then) {
        Ok(d) => (d.as_secs_f64(), false),
        Err(_) => (0.0, true),
    }
}

/// The database's current time, in the same type as the value it is compared with: for
/// `timestamp without time zone` that is local time in the session's zone, which is how such
/// columns are usually filled (`DEFAULT now()`).
pub async fn db_now(tx: &Transaction<'_>, ty: &Type) -> Result<SystemTime, ProbeError> {
    let sql = if *ty == Type::TIMESTAMP {
        "SELECT clock_timestamp()::timestamp"
    } else {
        "SELECT clock_timestamp()"
    };
    let row = tx.query_one(sql, &[]).await.map_err(|e| query_error(&e))?;
    row.try_get::<_, SystemTime>(0)
        .map_err(|e| ProbeError::new(ErrorReason::Decode, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_differences_are_clamped_and_flagged() {
        let now = SystemTime::now();
        let later = now + std::time::Duration::from_secs(3);
        assert_eq!(seconds_between(later, now), (0.0, true));
        let (lag, clamped) = seconds_between(now, later);
        assert!((lag - 3.0).abs() < 1e-9 && !clamped);
    }
}
