//! The source-side comparison that cache and HTTP-view kinds share: given the version a view
//! shows, ask the source of truth (a `postgres` or `mysql` source) for the oldest change newer
//! than it, and take its age on that database's own clock.
//!
//! A view that only says *what* it shows (a source sequence, an updated-at, a version header)
//! cannot say how far behind that is; the source can. Asking it keeps the product's rule: an
//! idle source has no newer change and reads 0, a view stuck on old data reads a growing lag,
//! and only one clock (the database's) is involved.
//!
//! Two shapes of question:
//! - **one version** (`one`): `$1` (`?` on MySQL) is the version; the query returns at most one
//!   row, the time of the oldest newer change (NULL when there is none) and optionally a count.
//! - **a sample of entities** (`entities`): `$1` is a JSON array of `{"key", "id", "version"}`
//!   objects, one per sampled cache entry, so a sample costs one query; the query returns one
//!   row per entity that trails its source, its key and the time of its oldest newer change.

pub mod config;

use std::sync::Arc;
use std::time::SystemTime;

use bytes::BytesMut;
use mysql_async::prelude::Queryable;
use mysql_async::{Row as MyRow, Value as MyValue};
use serde::Serialize;
use tokio::time::Instant;
use tokio_postgres::types::{ToSql, Type};

use super::mysql::MysqlPool;
use super::postgres::PgPool;
use super::postgres::query::{
    EncodedParam, Pending as PgPending, count_without_time, db_now, explain, read_only,
    read_pending, read_time, seconds_between,
};
use super::postgres::query_error;
use super::{ErrorReason, ProbeError, SourceHandle, SourceHandles};
pub use config::OldestPending;

/// What the source says about one version.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pending {
    /// Age of the oldest change newer than the version, 0 when there is none.
    pub lag_seconds: f64,
    /// How many changes are newer, when the query returns a count.
    pub count: Option<u64>,
    /// The oldest change was "in the future" of the database's clock and the age was clamped.
    pub negative_lag_clamped: bool,
}

/// One sampled cache entry: its key, the part of it the pattern's `*` matched, and the version
/// it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entity {
    pub key: String,
    pub id: String,
    pub version: String,
}

/// An entity whose cached version trails its source.
#[derive(Debug, Clone, PartialEq)]
pub struct StaleEntity {
    pub key: String,
    /// Age of the oldest change of this entity newer than its cached version.
    pub lag_seconds: f64,
}

/// The answer for a sample of entities.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StaleEntities {
    pub stale: Vec<StaleEntity>,
    /// Some age was below zero on the database's clock and was clamped.
    pub negative_lag_clamped: bool,
}

/// Which question a probe asks, for `check --connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    OneVersion,
    Entities,
}

/// The comparison of one probe, over its SQL source's pool.
pub struct SourceComparison {
    query: String,
    database: Database,
}

enum Database {
    Postgres(Arc<PgPool>),
    Mysql(Arc<MysqlPool>),
}

impl SourceComparison {
    pub fn new(spec: &OldestPending, sources: &SourceHandles) -> Result<Self, ProbeError> {
        let database = match sources.get(&spec.source) {
            Some(SourceHandle::Postgres(pool)) => Database::Postgres(pool.clone()),
            Some(SourceHandle::Mysql(pool)) => Database::Mysql(pool.clone()),
            _ => {
                return Err(ProbeError::new(
                    ErrorReason::Connect,
                    format!(
                        "source {} is not a configured postgres or mysql source",
                        spec.source
                    ),
                ));
            }
        };
        Ok(Self {
            query: spec.query.clone(),
            database,
        })
    }

    /// The oldest source change newer than `version`, and its age on the source's clock.
    pub async fn one(&self, version: &str, deadline: Instant) -> Result<Pending, ProbeError> {
        match &self.database {
            Database::Postgres(pool) => postgres_one(pool, &self.query, version, deadline).await,
            Database::Mysql(pool) => mysql_one(pool, &self.query, version, deadline).await,
        }
    }

    /// The entities of `sample` that trail their source, each with the age of its oldest
    /// newer change. An empty sample asks nothing.
    pub async fn entities(
        &self,
        sample: &[Entity],
        deadline: Instant,
    ) -> Result<StaleEntities, ProbeError> {
        if sample.is_empty() {
            return Ok(StaleEntities::default());
        }
        let json = serde_json::to_string(sample)
            .map_err(|e| ProbeError::new(ErrorReason::Decode, e.to_string()))?;
        let stale = match &self.database {
            Database::Postgres(pool) => postgres_entities(pool, &self.query, &json, deadline).await,
            Database::Mysql(pool) => mysql_entities(pool, &self.query, &json, deadline).await,
        }?;
        // A key the query did not ask about would be a stale entity the cache never sampled.
        if let Some(unknown) = stale
            .stale
            .iter()
            .find(|s| !sample.iter().any(|e| e.key == s.key))
        {
            return Err(ProbeError::new(
                ErrorReason::Decode,
                format!(
                    "oldest_pending returned key {:?}, which is not in the sample it was given",
                    unknown.key
                ),
            ));
        }
        Ok(stale)
    }

    /// Checks that the source accepts the query for `shape`: syntax, tables, grants, one
    /// parameter, and columns of the types the answer is read as. Runs nothing.
    pub async fn check(&self, shape: Shape, deadline: Instant) -> Result<(), ProbeError> {
        match &self.database {
            Database::Postgres(pool) => postgres_check(pool, &self.query, shape, deadline).await,
            Database::Mysql(pool) => mysql_check(pool, &self.query, shape, deadline).await,
        }
    }
}

const TOO_SLOW: &str = "oldest_pending did not complete before the deadline";

fn one_parameter(found: usize) -> ProbeError {
    ProbeError::new(
        ErrorReason::Query,
        format!(
            "oldest_pending takes {found} parameters; exactly one (the view's version) is given"
        ),
    )
}

// --- PostgreSQL -------------------------------------------------------------------------------

async fn postgres_one(
    pool: &PgPool,
    sql: &str,
    version: &str,
    deadline: Instant,
) -> Result<Pending, ProbeError> {
    read_only(pool, deadline, TOO_SLOW, async |tx| {
        let statement = tx.prepare(sql).await.map_err(|e| query_error(&e))?;
        let param = match statement.params() {
            [ty] => encode_version(version, ty)?,
            more => return Err(one_parameter(more.len())),
        };
        let rows = tx
            .query(&statement, &[&param])
            .await
            .map_err(|e| query_error(&e))?;
        let PgPending {
            lag_seconds,
            negative_lag_clamped,
            count,
        } = read_pending(tx, &rows).await?;
        Ok(Pending {
            lag_seconds,
            negative_lag_clamped,
            count: count.map(|n| n.max(0) as u64),
        })
    })
    .await
}

async fn postgres_entities(
    pool: &PgPool,
    sql: &str,
    json: &str,
    deadline: Instant,
) -> Result<StaleEntities, ProbeError> {
    read_only(pool, deadline, TOO_SLOW, async |tx| {
        let statement = tx.prepare(sql).await.map_err(|e| query_error(&e))?;
        let param = match statement.params() {
            [ty] => encode_json(json, ty)?,
            more => return Err(one_parameter(more.len())),
        };
        let time_type = entity_columns(statement.columns().iter().map(|c| c.type_()))?;
        let rows = tx
            .query(&statement, &[&param])
            .await
            .map_err(|e| query_error(&e))?;
        let mut answer = StaleEntities::default();
        if !rows.is_empty() {
            let now = db_now(tx, &time_type).await?;
            for row in &rows {
                let key: String = row
                    .try_get(0)
                    .map_err(|e| ProbeError::new(ErrorReason::Decode, e.to_string()))?;
                let at = read_time(row, 1, &time_type, ENTITY_ROWS)?;
                // NULL: the entity has no newer change after all.
                if let Some(at) = at {
                    let (lag_seconds, clamped) = seconds_between(at, now);
                    answer.negative_lag_clamped |= clamped;
                    answer.stale.push(StaleEntity { key, lag_seconds });
                }
            }
        }
        Ok(answer)
    })
    .await
}

const ENTITY_ROWS: &str =
    "oldest_pending for a key pattern must return rows of (key text, oldest change timestamp)";

/// The type of the timestamp column of an entity query, after checking its two columns.
fn entity_columns<'a>(mut types: impl Iterator<Item = &'a Type>) -> Result<Type, ProbeError> {
    let shape_error =
        |got: String| ProbeError::new(ErrorReason::Decode, format!("{ENTITY_ROWS}, got {got}"));
    let key = types
        .next()
        .ok_or_else(|| shape_error("no column".into()))?;
    let at = types
        .next()
        .ok_or_else(|| shape_error("one column".into()))?;
    if !<String as tokio_postgres::types::FromSql>::accepts(key) {
        return Err(shape_error(format!(
            "a first column of type {}",
            key.name()
        )));
    }
    if *at != Type::TIMESTAMPTZ && *at != Type::TIMESTAMP {
        return Err(shape_error(format!(
            "a second column of type {}",
            at.name()
        )));
    }
    Ok(at.clone())
}

/// The version, read as text from the view, in the binary form of `$1`'s type: integers and
/// floats are parsed, timestamps read as unix seconds or RFC 3339, text and JSON passed as they
/// are. Anything else is cast in SQL (`$1::text::numeric`).
fn encode_version(version: &str, ty: &Type) -> Result<EncodedParam, ProbeError> {
    let mut out = BytesMut::new();
    let wrong = |what: &str| {
        ProbeError::new(
            ErrorReason::Decode,
            format!(
                "the view's version {:?} is not {what}, which $1 ({}) needs",
                shorten(version),
                ty.name()
            ),
        )
    };
    let trimmed = version.trim();
    let encoded = if *ty == Type::INT8 || *ty == Type::INT4 || *ty == Type::INT2 {
        let value: i64 = trimmed.parse().map_err(|_| wrong("an integer"))?;
        if *ty == Type::INT8 {
            value.to_sql(ty, &mut out)
        } else if *ty == Type::INT4 {
            i32::try_from(value)
                .map_err(|_| wrong("an integer"))?
                .to_sql(ty, &mut out)
        } else {
            i16::try_from(value)
                .map_err(|_| wrong("a smallint"))?
                .to_sql(ty, &mut out)
        }
    } else if *ty == Type::FLOAT8 || *ty == Type::FLOAT4 {
        let value: f64 = trimmed.parse().map_err(|_| wrong("a number"))?;
        if *ty == Type::FLOAT8 {
            value.to_sql(ty, &mut out)
        } else {
            (value as f32).to_sql(ty, &mut out)
        }
    } else if *ty == Type::TIMESTAMPTZ || *ty == Type::TIMESTAMP {
        parse_timestamp(trimmed)
            .map_err(|_| wrong("a time (unix seconds or RFC 3339)"))?
            .to_sql(ty, &mut out)
    } else if *ty == Type::JSON || *ty == Type::JSONB {
        return encode_json(version, ty);
    } else if <String as ToSql>::accepts(ty) {
        version.to_sql(ty, &mut out)
    } else {
        return Err(ProbeError::new(
            ErrorReason::Query,
            format!(
                "the view's version cannot be passed as {}; take it as text and cast in SQL \
                 ($1::text::{})",
                ty.name(),
                ty.name()
            ),
        ));
    };
    encoded.map_err(|e| ProbeError::new(ErrorReason::Decode, e.to_string()))?;
    Ok(EncodedParam(out.to_vec()))
}

/// A JSON document as `$1`: json and text take its text, jsonb a version byte before it.
fn encode_json(json: &str, ty: &Type) -> Result<EncodedParam, ProbeError> {
    if *ty == Type::JSONB {
        let mut bytes = Vec::with_capacity(json.len() + 1);
        bytes.push(1);
        bytes.extend_from_slice(json.as_bytes());
        Ok(EncodedParam(bytes))
    } else if *ty == Type::JSON || <String as ToSql>::accepts(ty) {
        Ok(EncodedParam(json.as_bytes().to_vec()))
    } else {
        Err(ProbeError::new(
            ErrorReason::Query,
            format!(
                "$1 is the sample as a JSON array, but the query takes it as {}; write $1::jsonb",
                ty.name()
            ),
        ))
    }
}

async fn postgres_check(
    pool: &PgPool,
    sql: &str,
    shape: Shape,
    deadline: Instant,
) -> Result<(), ProbeError> {
    read_only(pool, deadline, TOO_SLOW, async |tx| {
        let statement = tx.prepare(sql).await.map_err(|e| query_error(&e))?;
        let [param] = statement.params() else {
            return Err(one_parameter(statement.params().len()));
        };
        let columns: Vec<&Type> = statement.columns().iter().map(|c| c.type_()).collect();
        match shape {
            Shape::OneVersion => {
                if let Some(ty) = columns.first() {
                    if **ty != Type::TIMESTAMPTZ && **ty != Type::TIMESTAMP {
                        return Err(ProbeError::new(
                            ErrorReason::Decode,
                            format!(
                                "oldest_pending must return a timestamp or timestamptz first, got {}",
                                ty.name()
                            ),
                        ));
                    }
                }
                let convertible = [Type::INT2, Type::INT4, Type::INT8, Type::FLOAT4, Type::FLOAT8]
                    .contains(param)
                    || [Type::TIMESTAMP, Type::TIMESTAMPTZ, Type::JSON, Type::JSONB].contains(param)
                    || <String as ToSql>::accepts(param);
                if !convertible {
                    return Err(encode_version("", param).err().unwrap_or_else(|| {
                        ProbeError::new(ErrorReason::Query, "unsupported parameter type")
                    }));
                }
            }
            Shape::Entities => {
                entity_columns(columns.into_iter())?;
                encode_json("[]", param)?;
            }
        }
        explain(tx, sql).await?;
        Ok(())
    })
    .await
}

// --- MySQL and MariaDB ------------------------------------------------------------------------

async fn mysql_one(
    pool: &MysqlPool,
    sql: &str,
    version: &str,
    deadline: Instant,
) -> Result<Pending, ProbeError> {
    let mut conn = pool.get(deadline).await?;
    let rows: Vec<MyRow> = super::mysql::run(deadline, conn.exec(sql, (version,))).await?;
    let row = match rows.as_slice() {
        [] => None,
        [row] => Some(row),
        more => {
            return Err(ProbeError::new(
                ErrorReason::Decode,
                format!(
                    "oldest_pending returned {} rows, expected at most one (use MIN(…) or ORDER BY … LIMIT 1)",
                    more.len()
                ),
            ));
        }
    };
    let oldest = match row {
        None => None,
        Some(row) => mysql_time(row, 0)?,
    };
    let count = match row.filter(|row| row.len() > 1) {
        None => None,
        Some(row) => Some(mysql_count(row)?),
    };
    count_without_time(oldest.is_none(), count.map(|n| n as i64))?;
    let (lag_seconds, negative_lag_clamped) = match oldest {
        None => (0.0, false),
        Some(at) => {
            let now = mysql_now(&mut conn, deadline).await?;
            clamp(now - at)
        }
    };
    conn.release();
    Ok(Pending {
        lag_seconds,
        count,
        negative_lag_clamped,
    })
}

async fn mysql_entities(
    pool: &MysqlPool,
    sql: &str,
    json: &str,
    deadline: Instant,
) -> Result<StaleEntities, ProbeError> {
    let mut conn = pool.get(deadline).await?;
    let rows: Vec<MyRow> = super::mysql::run(deadline, conn.exec(sql, (json,))).await?;
    let mut answer = StaleEntities::default();
    if !rows.is_empty() {
        let now = mysql_now(&mut conn, deadline).await?;
        for row in &rows {
            if row.len() < 2 {
                return Err(ProbeError::new(
                    ErrorReason::Decode,
                    format!("{ENTITY_ROWS}, got {} column(s)", row.len()),
                ));
            }
            let key = match row.as_ref(0) {
                Some(MyValue::Bytes(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
                Some(MyValue::Int(n)) => n.to_string(),
                Some(MyValue::UInt(n)) => n.to_string(),
                other => {
                    return Err(ProbeError::new(
                        ErrorReason::Decode,
                        format!("{ENTITY_ROWS}, got a key of {other:?}"),
                    ));
                }
            };
            if let Some(at) = mysql_time(row, 1)? {
                let (lag_seconds, clamped) = clamp(now - at);
                answer.negative_lag_clamped |= clamped;
                answer.stale.push(StaleEntity { key, lag_seconds });
            }
        }
    }
    conn.release();
    Ok(answer)
}

async fn mysql_check(
    pool: &MysqlPool,
    sql: &str,
    shape: Shape,
    deadline: Instant,
) -> Result<(), ProbeError> {
    let mut conn = pool.get(deadline).await?;
    // Preparing checks syntax, tables and privileges, and counts the parameters.
    let statement = super::mysql::run(deadline, conn.prep(sql)).await?;
    if statement.num_params() != 1 {
        return Err(one_parameter(usize::from(statement.num_params())));
    }
    let wanted = match shape {
        Shape::OneVersion => 1,
        Shape::Entities => 2,
    };
    if statement.columns().len() < wanted {
        return Err(ProbeError::new(
            ErrorReason::Decode,
            format!(
                "oldest_pending returns {} column(s), expected at least {wanted}",
                statement.columns().len()
            ),
        ));
    }
    super::mysql::run(deadline, conn.close(statement)).await?;
    conn.release();
    Ok(())
}

/// The server's clock, in the session's time zone like the DATETIME and TIMESTAMP values it is
/// compared with, as seconds on the same naive scale as `mysql_time`.
async fn mysql_now(
    conn: &mut super::mysql::PooledConn<'_>,
    deadline: Instant,
) -> Result<f64, ProbeError> {
    // The binary protocol (exec) returns DATETIME values as dates, not text.
    let row: Option<MyRow> =
        super::mysql::run(deadline, conn.exec_first("SELECT NOW(6)", ())).await?;
    let row = row.ok_or_else(|| ProbeError::new(ErrorReason::NoData, "NOW(6) returned no row"))?;
    mysql_time(&row, 0)?.ok_or_else(|| ProbeError::new(ErrorReason::Decode, "NOW(6) is NULL"))
}

/// Column `index` as seconds since 1970-01-01 00:00 of the session's zone (the zone cancels out
/// in `now − then`); NULL is `None`.
fn mysql_time(row: &MyRow, index: usize) -> Result<Option<f64>, ProbeError> {
    match row.as_ref(index) {
        None | Some(MyValue::NULL) => Ok(None),
        Some(MyValue::Date(year, month, day, hour, minute, second, micros)) => {
            let days = days_from_civil(i64::from(*year), i64::from(*month), i64::from(*day));
            let seconds = days * 86_400
                + i64::from(*hour) * 3_600
                + i64::from(*minute) * 60
                + i64::from(*second);
            Ok(Some(seconds as f64 + f64::from(*micros) / 1e6))
        }
        Some(other) => Err(ProbeError::new(
            ErrorReason::Decode,
            format!("oldest_pending must return a DATETIME or TIMESTAMP, got {other:?}"),
        )),
    }
}

fn mysql_count(row: &MyRow) -> Result<u64, ProbeError> {
    match row.as_ref(1) {
        None | Some(MyValue::NULL) => Ok(0),
        Some(MyValue::Int(n)) => Ok((*n).max(0) as u64),
        Some(MyValue::UInt(n)) => Ok(*n),
        Some(MyValue::Bytes(bytes)) => String::from_utf8_lossy(bytes)
            .trim()
            .parse::<u64>()
            .map_err(|_| {
                ProbeError::new(ErrorReason::Decode, "the pending count must be an integer")
            }),
        Some(other) => Err(ProbeError::new(
            ErrorReason::Decode,
            format!("the pending count must be an integer, got {other:?}"),
        )),
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn clamp(seconds: f64) -> (f64, bool) {
    if seconds < 0.0 {
        (0.0, true)
    } else {
        (seconds, false)
    }
}

// --- Times written by other programs ----------------------------------------------------------

/// Reads a time that a program wrote into a cache or a response: a number is seconds since the
/// Unix epoch (milliseconds when above 10^11, which as seconds would be beyond the year 5000),
/// anything else RFC 3339 (`2026-12-05T15:00:00.5Z`, `…+01:00`).
pub fn parse_timestamp(text: &str) -> Result<SystemTime, String> {
    let text = text.trim();
    if let Ok(number) = text.parse::<f64>() {
        if !number.is_finite() || number < 0.0 {
            return Err(format!("{:?} is not a time", shorten(text)));
        }
        let seconds = if number > 1e11 { number / 1e3 } else { number };
        return Ok(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs_f64(seconds));
    }
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            format!(
                "{:?} is neither unix seconds nor an RFC 3339 time",
                shorten(text)
            )
        })?;
    let nanos = parsed.unix_timestamp_nanos();
    let since_epoch = std::time::Duration::from_nanos(
        u64::try_from(nanos).map_err(|_| format!("{:?} is before 1970", shorten(text)))?,
    );
    Ok(SystemTime::UNIX_EPOCH + since_epoch)
}

/// A value from a remote system, cut for an error message.
fn shorten(text: &str) -> String {
    const MAX: usize = 64;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(MAX).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_take_the_type_of_their_parameter() {
        assert_eq!(
            encode_version(" 42 ", &Type::INT8).expect("int8").0,
            42i64.to_be_bytes()
        );
        assert_eq!(
            encode_version("42", &Type::INT4).expect("int4").0,
            42i32.to_be_bytes()
        );
        assert_eq!(encode_version("v42", &Type::TEXT).expect("text").0, b"v42");
        let error = encode_version("v42", &Type::INT8).expect_err("not an integer");
        assert_eq!(error.reason, ErrorReason::Decode);
        assert!(
            error.message.contains("\"v42\" is not an integer"),
            "{error}"
        );
        assert!(encode_version("99999", &Type::INT2).is_err());
        let numeric = encode_version("1.5", &Type::NUMERIC).expect_err("numeric");
        assert!(numeric.message.contains("$1::text::numeric"), "{numeric}");
        assert_eq!(encode_json("[]", &Type::JSONB).expect("jsonb").0, b"\x01[]");
        assert_eq!(encode_json("[]", &Type::TEXT).expect("text").0, b"[]");
        assert!(encode_json("[]", &Type::INT8).is_err());
    }

    #[test]
    fn times_are_unix_seconds_milliseconds_or_rfc3339() {
        let at = |secs: f64| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs_f64(secs);
        assert_eq!(parse_timestamp("1780000000"), Ok(at(1_780_000_000.0)));
        assert_eq!(parse_timestamp("1780000000.5"), Ok(at(1_780_000_000.5)));
        assert_eq!(parse_timestamp("1780000000500"), Ok(at(1_780_000_000.5)));
        assert_eq!(parse_timestamp("1970-01-01T00:00:10Z"), Ok(at(10.0)));
        assert_eq!(
            parse_timestamp("1970-01-01T01:00:10.25+01:00"),
            Ok(at(10.25))
        );
        assert!(parse_timestamp("yesterday").is_err());
        assert!(parse_timestamp("-5").is_err());
    }

    #[test]
    fn civil_days_match_the_calendar() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 12, 5), 20_792);
    }
}
