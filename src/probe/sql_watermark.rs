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
use tokio_postgres::types::{FromSql, ToSql, Type};
use tokio_postgres::{Row, Transaction};

use super::postgres::query::{
    EncodedParam, Pending, begin, db_now, explain, read_only, read_pending, seconds_between,
    settle,
};
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
        let (mut sample, watermark) = settle(
            client,
            measured,
            "queries did not complete before the deadline",
        )?;
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
        let spec = self.spec.clone();
        read_only(&self.pool, deadline, "check timed out", async |tx| {
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
            explain(tx, &spec.watermark).await?;
            if let Some(sql) = &spec.oldest_pending {
                explain(tx, sql).await?;
            }
            Ok(())
        })
        .await
    }
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
            let (lag, clamped) = (pending.lag_seconds, pending.negative_lag_clamped);
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
    read_pending(tx, &rows).await
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
}
