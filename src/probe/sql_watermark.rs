//! `sql_watermark`: lag of a projection or read model, measured with SQL on the source's own
//! clock.
//!
//! Each run opens one read-only transaction with a statement timeout, reads the view's
//! watermark, passes it as `$1` to `oldest_pending`, and subtracts the oldest pending change's
//! timestamp from the database's `clock_timestamp()` — so only one clock is involved. Without
//! `oldest_pending` (`mode: since_watermark`) lag is `now − watermark`, which an idle source
//! reads as lag: that is why the config must opt into it.

pub mod config;

use std::cmp::Ordering;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use tokio::time::{Instant, timeout_at};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Row, Transaction};

use super::postgres::{PgPool, query_error};
use super::{Backlog, BacklogUnit, ErrorReason, ProbeError, Sample};
use crate::model::{SqlWatermark, WatermarkMode};

pub struct SqlWatermarkProbe {
    spec: SqlWatermark,
    pool: Arc<PgPool>,
    /// The previous watermark, to count positions that go backwards.
    previous: Option<Watermark>,
}

impl SqlWatermarkProbe {
    pub fn new(spec: SqlWatermark, pool: Arc<PgPool>) -> Self {
        Self {
            spec,
            pool,
            previous: None,
        }
    }

    pub async fn run(&mut self, deadline: Instant) -> Result<Sample, ProbeError> {
        let mut client = self.pool.get(deadline).await?;
        let measured = timeout_at(deadline, measure(&self.spec, &mut client, deadline)).await;
        let (mut sample, watermark) = match measured {
            Ok(Ok(result)) => result,
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                return Err(ProbeError::new(
                    ErrorReason::Timeout,
                    "queries did not complete before the deadline",
                ));
            }
        };
        client.release();
        if let Some(previous) = &self.previous {
            sample.position_regressed =
                watermark.partial_cmp_value(previous) == Some(Ordering::Less);
        }
        self.previous = Some(watermark);
        Ok(sample)
    }

    /// Prepares and plans both statements in a read-only transaction: the server checks
    /// syntax, tables and privileges, and we check that the watermark can be passed as `$1`.
    pub async fn check(&mut self, deadline: Instant) -> Result<(), ProbeError> {
        let mut client = self.pool.get(deadline).await?;
        let spec = self.spec.clone();
        let checked = timeout_at(deadline, async {
            let tx = begin(&mut client, deadline).await?;
            let watermark = tx
                .prepare(&spec.watermark)
                .await
                .map_err(|e| query_error(&e))?;
            let column_type = watermark
                .columns()
                .first()
                .map(|c| c.type_().clone())
                .ok_or_else(|| {
                    ProbeError::new(ErrorReason::Decode, "watermark query returns no column")
                })?;
            if let Some(sql) = &spec.oldest_pending {
                let pending = tx.prepare(sql).await.map_err(|e| query_error(&e))?;
                if let Some(param) = pending.params().first() {
                    if !can_convert(&column_type, param) {
                        return Err(conversion_error(&column_type, param));
                    }
                }
            }
            // Preparing does not check table privileges; planning does. EXPLAIN plans each
            // statement (with NULL parameters) without running it.
            explain(&tx, &spec.watermark).await?;
            if let Some(sql) = &spec.oldest_pending {
                explain(&tx, sql).await?;
            }
            tx.rollback().await.map_err(|e| query_error(&e))
        })
        .await;
        match checked {
            Ok(Ok(())) => {
                client.release();
                Ok(())
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ProbeError::new(ErrorReason::Timeout, "check timed out")),
        }
    }
}

async fn explain(tx: &Transaction<'_>, sql: &str) -> Result<(), ProbeError> {
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

/// Opens the run's read-only transaction, with a statement timeout that ends at the deadline
/// so that a slow query is cancelled by the server rather than abandoned mid-flight. Shared
/// with the other PostgreSQL probe kinds.
pub(super) async fn begin<'c>(
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

async fn measure(
    spec: &SqlWatermark,
    client: &mut tokio_postgres::Client,
    deadline: Instant,
) -> Result<(Sample, Watermark), ProbeError> {
    let tx = begin(client, deadline).await?;
    let rows = tx
        .query(spec.watermark.as_str(), &[])
        .await
        .map_err(|e| query_error(&e))?;
    let watermark = single_watermark(&rows)?;
    let position = watermark.display();

    let sample = match (spec.mode, &spec.oldest_pending) {
        (WatermarkMode::OldestPending, Some(sql)) => {
            let pending = oldest_pending(&tx, sql, &watermark).await?;
            let backlog = pending.count.map(|n| Backlog {
                unit: BacklogUnit::Rows,
                value: n as f64,
            });
            let (lag, clamped) = match pending.oldest {
                None => (0.0, false),
                Some(oldest) => {
                    let now = db_now(&tx, &oldest.ty).await?;
                    seconds_between(oldest.at, now)
                }
            };
            let detail = match pending.count {
                Some(n) => format!("watermark {position}, {n} pending"),
                None => format!("watermark {position}"),
            };
            Sample {
                lag_seconds: Some(lag),
                backlog,
                position: Some(position),
                detail: Some(detail),
                negative_lag_clamped: clamped,
                position_regressed: false,
                ..Sample::default()
            }
        }
        _ => {
            let at = watermark.as_time().ok_or_else(|| {
                ProbeError::new(
                    ErrorReason::Decode,
                    format!(
                        "mode since_watermark needs a timestamp watermark, got {}",
                        watermark.ty.name()
                    ),
                )
            })?;
            let now = db_now(&tx, &watermark.ty).await?;
            let (lag, clamped) = seconds_between(at, now);
            Sample {
                lag_seconds: Some(lag),
                backlog: None,
                detail: Some(format!("watermark {position}")),
                position: Some(position),
                negative_lag_clamped: clamped,
                position_regressed: false,
                ..Sample::default()
            }
        }
    };
    // Read-only: nothing to commit; ending it explicitly returns the connection clean.
    tx.rollback().await.map_err(|e| query_error(&e))?;
    Ok((sample, watermark))
}

/// `now − then` in seconds, clamped at 0; the flag says whether clamping happened.
fn seconds_between(then: SystemTime, now: SystemTime) -> (f64, bool) {
    match now.duration_since(then) {
        Ok(d) => (d.as_secs_f64(), false),
        Err(_) => (0.0, true),
    }
}

/// The database's current time, in the same type as the value it is compared with: for
/// `timestamp without time zone` that is local time in the session's zone, which is how such
/// columns are usually filled (`DEFAULT now()`).
async fn db_now(tx: &Transaction<'_>, ty: &Type) -> Result<SystemTime, ProbeError> {
    let sql = if *ty == Type::TIMESTAMP {
        "SELECT clock_timestamp()::timestamp"
    } else {
        "SELECT clock_timestamp()"
    };
    let row = tx.query_one(sql, &[]).await.map_err(|e| query_error(&e))?;
    row.try_get::<_, SystemTime>(0)
        .map_err(|e| ProbeError::new(ErrorReason::Decode, e.to_string()))
}

fn single_watermark(rows: &[Row]) -> Result<Watermark, ProbeError> {
    let row = match rows {
        [] => {
            return Err(ProbeError::new(
                ErrorReason::NoData,
                "watermark query returned no row",
            ));
        }
        [row] => row,
        more => {
            return Err(ProbeError::new(
                ErrorReason::Decode,
                format!("watermark query returned {} rows, expected one", more.len()),
            ));
        }
    };
    if row.is_empty() {
        return Err(ProbeError::new(
            ErrorReason::Decode,
            "watermark query returned no column",
        ));
    }
    let raw: Option<RawValue> = row
        .try_get(0)
        .map_err(|e| ProbeError::new(ErrorReason::Decode, e.to_string()))?;
    let raw = raw.ok_or_else(|| ProbeError::new(ErrorReason::NoData, "watermark is NULL"))?;
    Ok(Watermark {
        ty: raw.ty,
        bytes: raw.bytes,
    })
}

struct Pending {
    oldest: Option<OldestChange>,
    count: Option<i64>,
}

struct OldestChange {
    at: SystemTime,
    ty: Type,
}

async fn oldest_pending(
    tx: &Transaction<'_>,
    sql: &str,
    watermark: &Watermark,
) -> Result<Pending, ProbeError> {
    let statement = tx.prepare(sql).await.map_err(|e| query_error(&e))?;
    let param = match statement.params() {
        [] => None,
        [ty] => Some(watermark.encode_as(ty)?),
        more => {
            return Err(ProbeError::new(
                ErrorReason::Query,
                format!(
                    "oldest_pending takes {} parameters; only $1 (the watermark) is given",
                    more.len()
                ),
            ));
        }
    };
    let params: Vec<&(dyn ToSql + Sync)> = match &param {
        Some(p) => vec![p],
        None => vec![],
    };
    let rows = tx
        .query(&statement, &params)
        .await
        .map_err(|e| query_error(&e))?;
    // No row at all reads as "nothing pending": `ORDER BY … LIMIT 1` styles return none.
    let row = match rows.as_slice() {
        [] => {
            return Ok(Pending {
                oldest: None,
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
    let oldest = match columns.first().map(|c| c.type_().clone()) {
        Some(ty) if ty == Type::TIMESTAMPTZ || ty == Type::TIMESTAMP => row
            .try_get::<_, Option<SystemTime>>(0)
            .map_err(|e| ProbeError::new(ErrorReason::Decode, e.to_string()))?
            .map(|at| OldestChange { at, ty }),
        Some(ty) => {
            return Err(ProbeError::new(
                ErrorReason::Decode,
                format!(
                    "oldest_pending must return a timestamp or timestamptz first, got {}",
                    ty.name()
                ),
            ));
        }
        None => {
            return Err(ProbeError::new(
                ErrorReason::Decode,
                "oldest_pending returned no column",
            ));
        }
    };
    let count = match columns.get(1).map(|c| c.type_().clone()) {
        None => None,
        Some(ty) => Some(read_count(row, &ty)?),
    };
    if let (None, Some(n)) = (&oldest, count) {
        if n > 0 {
            return Err(ProbeError::new(
                ErrorReason::Decode,
                format!("{n} changes pending but their oldest timestamp is NULL"),
            ));
        }
    }
    Ok(Pending {
        oldest,
        count: count.map(|n| n.max(0)),
    })
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

/// Any column value, kept in its binary wire form with its type.
struct RawValue {
    ty: Type,
    bytes: Vec<u8>,
}

impl<'a> FromSql<'a> for RawValue {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(RawValue {
            ty: ty.clone(),
            bytes: raw.to_vec(),
        })
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A parameter already encoded in the binary form of the statement's parameter type.
#[derive(Debug)]
struct EncodedParam(Vec<u8>);

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

/// The view's position as the watermark query returned it.
#[derive(Debug, Clone)]
struct Watermark {
    ty: Type,
    bytes: Vec<u8>,
}

/// A watermark decoded into something we can compare, print and convert.
enum Decoded {
    Int(i64),
    Float(f64),
    Text(String),
    Time(SystemTime),
    Other,
}

impl Watermark {
    fn decoded(&self) -> Decoded {
        let ty = &self.ty;
        let b = self.bytes.as_slice();
        let parsed = if *ty == Type::INT2 {
            i16::from_sql(ty, b).map(|v| Decoded::Int(v.into()))
        } else if *ty == Type::INT4 {
            i32::from_sql(ty, b).map(|v| Decoded::Int(v.into()))
        } else if *ty == Type::INT8 {
            i64::from_sql(ty, b).map(Decoded::Int)
        } else if *ty == Type::FLOAT4 {
            f32::from_sql(ty, b).map(|v| Decoded::Float(v.into()))
        } else if *ty == Type::FLOAT8 {
            f64::from_sql(ty, b).map(Decoded::Float)
        } else if *ty == Type::TIMESTAMP || *ty == Type::TIMESTAMPTZ {
            SystemTime::from_sql(ty, b).map(Decoded::Time)
        } else if <String as FromSql>::accepts(ty) {
            String::from_sql(ty, b).map(Decoded::Text)
        } else {
            Ok(Decoded::Other)
        };
        parsed.unwrap_or(Decoded::Other)
    }

    fn as_time(&self) -> Option<SystemTime> {
        match self.decoded() {
            Decoded::Time(t) => Some(t),
            _ => None,
        }
    }

    /// A stable text form, used as the progress marker and in details.
    fn display(&self) -> String {
        match self.decoded() {
            Decoded::Int(v) => v.to_string(),
            Decoded::Float(v) => v.to_string(),
            Decoded::Text(v) => v,
            Decoded::Time(t) => match t.duration_since(UNIX_EPOCH) {
                Ok(d) => format!("{:.6}", d.as_secs_f64()),
                Err(e) => format!("-{:.6}", e.duration().as_secs_f64()),
            },
            Decoded::Other => self.bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// Orders two watermarks when their values are comparable (numbers, times).
    fn partial_cmp_value(&self, other: &Watermark) -> Option<Ordering> {
        match (self.decoded(), other.decoded()) {
            (Decoded::Int(a), Decoded::Int(b)) => Some(a.cmp(&b)),
            (Decoded::Float(a), Decoded::Float(b)) => a.partial_cmp(&b),
            (Decoded::Time(a), Decoded::Time(b)) => Some(a.cmp(&b)),
            _ => None,
        }
    }

    /// Encodes the watermark as the binary value of `$1`'s type. Identical types pass through
    /// unchanged (uuid, numeric, pg_lsn…); integers convert between widths; anything can be
    /// passed as text.
    fn encode_as(&self, param: &Type) -> Result<EncodedParam, ProbeError> {
        if *param == self.ty {
            return Ok(EncodedParam(self.bytes.clone()));
        }
        let mut out = BytesMut::new();
        let encoded = match self.decoded() {
            Decoded::Int(v) if *param == Type::INT8 => v.to_sql(param, &mut out),
            Decoded::Int(v) if *param == Type::INT4 => i32::try_from(v)
                .map_err(|_| "out of range for integer".into())
                .and_then(|v| v.to_sql(param, &mut out)),
            Decoded::Int(v) if *param == Type::INT2 => i16::try_from(v)
                .map_err(|_| "out of range for smallint".into())
                .and_then(|v| v.to_sql(param, &mut out)),
            Decoded::Int(v) if *param == Type::FLOAT8 => (v as f64).to_sql(param, &mut out),
            Decoded::Float(v) if *param == Type::FLOAT8 => v.to_sql(param, &mut out),
            Decoded::Time(t) if *param == Type::TIMESTAMP || *param == Type::TIMESTAMPTZ => {
                t.to_sql(param, &mut out)
            }
            // Numbers and text have one obvious text form; other types (timestamps, numeric,
            // uuid, pg_lsn…) are passed only to a parameter of their own type, above, because
            // our text form of them would not be the server's.
            Decoded::Int(_) | Decoded::Float(_) | Decoded::Text(_)
                if <String as ToSql>::accepts(param) =>
            {
                self.display().to_sql(param, &mut out)
            }
            _ => return Err(conversion_error(&self.ty, param)),
        };
        encoded.map_err(|e| {
            ProbeError::new(
                ErrorReason::Decode,
                format!("watermark cannot be passed as {}: {e}", param.name()),
            )
        })?;
        Ok(EncodedParam(out.to_vec()))
    }
}

fn can_convert(from: &Type, to: &Type) -> bool {
    let ints = [Type::INT2, Type::INT4, Type::INT8];
    let floats = [Type::FLOAT4, Type::FLOAT8];
    let has_text_form =
        ints.contains(from) || floats.contains(from) || <String as FromSql>::accepts(from);
    from == to
        || (ints.contains(from) && (ints.contains(to) || *to == Type::FLOAT8))
        || (*from == Type::FLOAT4 && *to == Type::FLOAT8)
        || ([Type::TIMESTAMP, Type::TIMESTAMPTZ].contains(from)
            && [Type::TIMESTAMP, Type::TIMESTAMPTZ].contains(to))
        || (has_text_form && <String as ToSql>::accepts(to))
}

fn conversion_error(from: &Type, to: &Type) -> ProbeError {
    ProbeError::new(
        ErrorReason::Decode,
        format!(
            "the watermark ({}) cannot be passed as $1 ({}); cast one of them in SQL",
            from.name(),
            to.name()
        ),
    )
}

/// The registry's view of this kind (`probe/mod.rs`).
impl super::Kind for SqlWatermarkProbe {
    const KEY: &'static str = "sql_watermark";
    type Settings = SqlWatermark;

    fn new(
        _probe: &crate::model::Probe,
        settings: &SqlWatermark,
        sources: &super::SourceHandles,
    ) -> Result<Self, ProbeError> {
        Ok(Self::new(settings.clone(), sources.postgres(&settings.source)?))
    }

    async fn run(&mut self, deadline: Instant) -> Result<super::Reading, ProbeError> {
        SqlWatermarkProbe::run(self, deadline).await.map(super::Reading::from)
    }

    async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        SqlWatermarkProbe::check(self, deadline)
            .await
            .map(|()| "queries accepted".to_owned())
    }

    fn source(settings: &SqlWatermark) -> &str {
        &settings.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int8(v: i64) -> Watermark {
        let mut out = BytesMut::new();
        v.to_sql(&Type::INT8, &mut out).expect("encode");
        Watermark {
            ty: Type::INT8,
            bytes: out.to_vec(),
        }
    }

    #[test]
    fn integer_watermarks_convert_between_widths() {
        let w = int8(42);
        let as_int4 = w.encode_as(&Type::INT4).expect("fits");
        assert_eq!(as_int4.0, 42i32.to_be_bytes());
        let as_text = w.encode_as(&Type::TEXT).expect("text");
        assert_eq!(as_text.0, b"42");
        let too_big = int8(i64::MAX).encode_as(&Type::INT2).expect_err("overflow");
        assert_eq!(too_big.reason, ErrorReason::Decode);
        assert!(w.encode_as(&Type::UUID).is_err());
        let mut stamp = BytesMut::new();
        SystemTime::now()
            .to_sql(&Type::TIMESTAMPTZ, &mut stamp)
            .expect("encode");
        let time = Watermark {
            ty: Type::TIMESTAMPTZ,
            bytes: stamp.to_vec(),
        };
        assert!(
            time.encode_as(&Type::TEXT).is_err(),
            "our text form of a timestamp is not the server's"
        );
        assert!(!can_convert(&Type::TIMESTAMPTZ, &Type::TEXT));
        assert!(can_convert(&Type::INT8, &Type::TEXT));
    }

    #[test]
    fn watermarks_compare_when_comparable() {
        assert_eq!(int8(1).partial_cmp_value(&int8(2)), Some(Ordering::Less));
        assert_eq!(int8(1).display(), "1");
    }

    #[test]
    fn negative_differences_are_clamped_and_flagged() {
        let now = SystemTime::now();
        let later = now + std::time::Duration::from_secs(3);
        assert_eq!(seconds_between(later, now), (0.0, true));
        let (lag, clamped) = seconds_between(now, later);
        assert!((lag - 3.0).abs() < 1e-9 && !clamped);
    }
}
