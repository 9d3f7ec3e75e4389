//! The two sides of a reconciliation on PostgreSQL and MySQL/MariaDB: each statement under
//! the run's deadline (on PostgreSQL in a read-only transaction with a statement timeout), its
//! rows read as [`Raw`] values for the ledger to normalise, and the source's clock read beside
//! them so that ages are taken on one clock.
//!
//! The user writes `$1` and `$2` on both engines. On MySQL they become `?`, and the derived
//! lookup's `$1` (the keys) becomes one `?` per key: MySQL has no array parameter, so
//! `IN ($1)` is how a batch of keys is asked for there, as `= ANY($1)` is on PostgreSQL.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mysql_async::prelude::Queryable;
use mysql_async::{Row as MyRow, Value as MyValue};
use tokio::time::Instant;
use tokio_postgres::types::{ToSql, Type};

use super::ledger::{Key, Raw, micros_since_epoch};
use crate::probe::canary::fill_placeholders;
use crate::probe::mysql::{MysqlPool, run};
use crate::probe::oldest_pending::days_from_civil;
use crate::probe::postgres::query::{db_now, explain, read_only};
use crate::probe::postgres::{PgPool, query_error};
use crate::probe::{ErrorReason, ProbeError, SourceHandle, SourceHandles};

/// Rows of a source query with the source's clock read right after them.
#[derive(Debug, Default)]
pub struct SourcePage {
    /// The source's clock after the query, in microseconds (naive times as if UTC, like the
    /// rows' times).
    pub now: i64,
    pub rows: Vec<[Raw; 3]>,
}

/// What a statement asks, for its parameters and for `check --connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Source records changed since `$1`: (key, version, changed_at).
    Recent,
    /// A page after `$1` of at most `$2` records: (key, version, changed_at) on the source,
    /// (key, version) on the derived side.
    SourcePage,
    DerivedPage,
    /// The derived records of the keys `$1`: (key, version).
    Lookup,
}

impl Shape {
    /// A question of this shape, for checking a statement without running it: the first page,
    /// no keys.
    fn example(self) -> Ask<'static> {
        let first = Page {
            after: None,
            limit: 1,
            text_keys: false,
        };
        match self {
            Shape::Recent => Ask::Recent(Duration::ZERO),
            Shape::SourcePage => Ask::SourcePage(first),
            Shape::DerivedPage => Ask::DerivedPage(first),
            Shape::Lookup => Ask::Lookup(&[]),
        }
    }

    fn columns(self) -> usize {
        match self {
            Shape::Recent | Shape::SourcePage => 3,
            Shape::DerivedPage | Shape::Lookup => 2,
        }
    }

    fn parameters(self) -> usize {
        match self {
            Shape::Recent | Shape::Lookup => 1,
            Shape::SourcePage | Shape::DerivedPage => 2,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Shape::Recent => "source query",
            Shape::SourcePage => "sweep query",
            Shape::DerivedPage => "sweep derived_query",
            Shape::Lookup => "derived query",
        }
    }

    fn parameters_meaning(self) -> &'static str {
        match self {
            Shape::Recent => "$1, the start of the window",
            Shape::Lookup => "$1, the keys",
            Shape::SourcePage | Shape::DerivedPage => "$1, the last key seen, and $2, the page size",
        }
    }
}

/// One side's database.
pub enum Side {
    Postgres(Arc<PgPool>),
    Mysql(Arc<MysqlPool>),
}

const TOO_SLOW: &str = "the reconcile query did not complete before the deadline";

impl Side {
    pub fn of(source: &str, sources: &SourceHandles) -> Result<Self, ProbeError> {
        match sources.get(source) {
            Some(SourceHandle::Postgres(pool)) => Ok(Side::Postgres(pool.clone())),
            Some(SourceHandle::Mysql(pool)) => Ok(Side::Mysql(pool.clone())),
            _ => Err(ProbeError::new(
                ErrorReason::Connect,
                format!("source {source} is not a configured postgres or mysql source"),
            )),
        }
    }

    /// Source records, as `ask` (`Recent` or `SourcePage`) says, with the source's clock.
    pub async fn source(
        &self,
        sql: &str,
        ask: Ask<'_>,
        deadline: Instant,
    ) -> Result<SourcePage, ProbeError> {
        let (now, rows) = self.ask(sql, ask, deadline).await?;
        Ok(SourcePage {
            now: now.unwrap_or_default(),
            rows: rows.into_iter().map(columns).collect(),
        })
    }

    /// Derived records, as `ask` (`Lookup` or `DerivedPage`) says. An empty lookup asks
    /// nothing.
    pub async fn derived(
        &self,
        sql: &str,
        ask: Ask<'_>,
        deadline: Instant,
    ) -> Result<Vec<[Raw; 2]>, ProbeError> {
        if let Ask::Lookup([]) = ask {
            return Ok(Vec::new());
        }
        let (_, rows) = self.ask(sql, ask, deadline).await?;
        Ok(rows.into_iter().map(columns).collect())
    }

    async fn ask(&self, sql: &str, ask: Ask<'_>, deadline: Instant) -> Result<Answer, ProbeError> {
        match self {
            Side::Postgres(pool) => pg_ask(pool, sql, ask, deadline).await,
            Side::Mysql(pool) => my_ask(pool, sql, ask, deadline).await,
        }
    }

    /// Checks that the server accepts `sql` as `shape` asks (syntax, objects, grants,
    /// parameters, columns) without running it.
    pub async fn check(&self, sql: &str, shape: Shape, deadline: Instant) -> Result<(), ProbeError> {
        match self {
            Side::Postgres(pool) => pg_check(pool, sql, shape, deadline).await,
            Side::Mysql(pool) => my_check(pool, sql, shape, deadline).await,
        }
    }
}

/// What a statement is asked, and so what is bound to its parameters.
#[derive(Clone, Copy)]
pub enum Ask<'a> {
    /// Source records changed within this long of the source's clock.
    Recent(Duration),
    /// A page of the sweep on the source, or on the derived side.
    SourcePage(Page<'a>),
    DerivedPage(Page<'a>),
    /// The derived records of these keys.
    Lookup(&'a [Key]),
}

/// A keyset page: at most `limit` records after `after` (`None`: from the first) in key order.
/// `text_keys`: the first page's cursor, which MySQL cannot type from the statement, is the
/// empty text rather than the smallest integer.
#[derive(Clone, Copy)]
pub struct Page<'a> {
    pub after: Option<&'a Key>,
    pub limit: usize,
    pub text_keys: bool,
}

impl Ask<'_> {
    fn shape(&self) -> Shape {
        match self {
            Ask::Recent(_) => Shape::Recent,
            Ask::SourcePage(_) => Shape::SourcePage,
            Ask::DerivedPage(_) => Shape::DerivedPage,
            Ask::Lookup(_) => Shape::Lookup,
        }
    }
}

/// The source's clock right after the query (source shapes only), and the rows, each as many
/// values as the shape has columns.
type Answer = (Option<i64>, Vec<Vec<Raw>>);

/// A row of `N` values as an array; the readers read exactly as many as the shape has.
fn columns<const N: usize>(row: Vec<Raw>) -> [Raw; N] {
    let mut values = row.into_iter();
    std::array::from_fn(|_| values.next().unwrap_or(Raw::Null))
}

fn wrong_parameters(shape: Shape, found: usize) -> ProbeError {
    ProbeError::new(
        ErrorReason::Query,
        format!(
            "the {} takes {found} parameter(s); it is given {} ({})",
            shape.describe(),
            shape.parameters(),
            shape.parameters_meaning()
        ),
    )
}

fn too_few_columns(shape: Shape, found: usize) -> ProbeError {
    let wanted = match shape.columns() {
        3 => "(key, version, changed_at)",
        _ => "(key, version)",
    };
    ProbeError::new(
        ErrorReason::Decode,
        format!(
            "the {} returns {found} column(s); it must return {wanted}",
            shape.describe()
        ),
    )
}

// --- PostgreSQL -------------------------------------------------------------------------------

async fn pg_ask(
    pool: &PgPool,
    sql: &str,
    ask: Ask<'_>,
    deadline: Instant,
) -> Result<Answer, ProbeError> {
    let shape = ask.shape();
    read_only(pool, deadline, TOO_SLOW, async |tx| {
        let statement = pg_statement(tx, sql, shape).await?;
        let params = match ask {
            Ask::Recent(window) => {
                let ty = window_type(&statement.params()[0])?;
                let now = db_now(tx, ty).await?;
                vec![PgValue::Time(
                    now.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH),
                )]
            }
            other => pg_params(other, statement.params())?,
        };
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(PgValue::as_sql).collect();
        let rows = tx
            .query(&statement, &refs)
            .await
            .map_err(|e| query_error(&e))?;
        // Ages are taken against the clock after the query: no record it returned is newer.
        let now = match shape.columns() {
            3 => {
                let time_type = statement.columns()[2].type_();
                Some(micros_since_epoch(db_now(tx, time_type).await?))
            }
            _ => None,
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(
                (0..shape.columns())
                    .map(|index| pg_raw(row, index))
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
        Ok((now, out))
    })
    .await
}

/// The window's start is compared with a timestamp: `$1` must be one.
fn window_type(ty: &Type) -> Result<&Type, ProbeError> {
    if *ty == Type::TIMESTAMPTZ || *ty == Type::TIMESTAMP {
        return Ok(ty);
    }
    Err(ProbeError::new(
        ErrorReason::Query,
        format!(
            "the source query's $1 is the start of the window, a timestamp, but the query \
             takes it as {}",
            ty.name()
        ),
    ))
}

/// A parameter value in the Rust type of its parameter's SQL type.
enum PgValue {
    Time(SystemTime),
    I16(i16),
    I32(i32),
    I64(i64),
    Text(String),
    I16s(Vec<i16>),
    I32s(Vec<i32>),
    I64s(Vec<i64>),
    Texts(Vec<String>),
}

impl PgValue {
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            PgValue::Time(v) => v,
            PgValue::I16(v) => v,
            PgValue::I32(v) => v,
            PgValue::I64(v) => v,
            PgValue::Text(v) => v,
            PgValue::I16s(v) => v,
            PgValue::I32s(v) => v,
            PgValue::I64s(v) => v,
            PgValue::Texts(v) => v,
        }
    }
}

fn pg_params(ask: Ask<'_>, types: &[Type]) -> Result<Vec<PgValue>, ProbeError> {
    match ask {
        Ask::Recent(_) => Ok(Vec::new()),
        Ask::SourcePage(Page { after, limit, .. }) | Ask::DerivedPage(Page { after, limit, .. }) => {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let limit = match &types[1] {
                ty if *ty == Type::INT8 => PgValue::I64(limit),
                ty if *ty == Type::INT4 => PgValue::I32(i32::try_from(limit).unwrap_or(i32::MAX)),
                ty => {
                    return Err(ProbeError::new(
                        ErrorReason::Query,
                        format!("$2 is the page size, an integer, but the query takes it as {}", ty.name()),
                    ));
                }
            };
            Ok(vec![pg_cursor(after, &types[0])?, limit])
        }
        Ask::Lookup(keys) => Ok(vec![pg_keys(keys, &types[0])?]),
    }
}

/// The sweep's cursor as `$1`: the last key seen, or the smallest value of the key's type
/// before the first page.
fn pg_cursor(after: Option<&Key>, ty: &Type) -> Result<PgValue, ProbeError> {
    let out_of_range = || {
        ProbeError::new(
            ErrorReason::Decode,
            format!("a key does not fit the query's $1 ({})", ty.name()),
        )
    };
    let int = |key: &Key| match key {
        Key::Int(n) => Ok(*n),
        Key::Text { .. } => Err(ProbeError::new(
            ErrorReason::Query,
            format!(
                "$1 is the last key seen, text with `key_type: text`, but the query takes it as {}",
                ty.name()
            ),
        )),
    };
    Ok(if *ty == Type::INT8 {
        PgValue::I64(after.map(int).transpose()?.unwrap_or(i64::MIN))
    } else if *ty == Type::INT4 {
        match after {
            Some(key) => PgValue::I32(i32::try_from(int(key)?).map_err(|_| out_of_range())?),
            None => PgValue::I32(i32::MIN),
        }
    } else if *ty == Type::INT2 {
        match after {
            Some(key) => PgValue::I16(i16::try_from(int(key)?).map_err(|_| out_of_range())?),
            None => PgValue::I16(i16::MIN),
        }
    } else if <String as ToSql>::accepts(ty) {
        PgValue::Text(after.map(Key::compared).unwrap_or_default())
    } else {
        return Err(ProbeError::new(
            ErrorReason::Query,
            format!(
                "$1 is the last key seen, an integer or text, but the query takes it as {}; \
                 compare the key as text (id::text > $1) or bigint",
                ty.name()
            ),
        ));
    })
}

/// The keys as `$1`, an array of the parameter's element type, in the source's spelling.
fn pg_keys(keys: &[Key], ty: &Type) -> Result<PgValue, ProbeError> {
    let ints = || -> Result<Vec<i64>, ProbeError> {
        keys.iter()
            .map(|key| match key {
                Key::Int(n) => Ok(*n),
                Key::Text { written, .. } => written.trim().parse().map_err(|_| {
                    ProbeError::new(
                        ErrorReason::Decode,
                        format!("a text key is not an integer, and $1 is {}", ty.name()),
                    )
                }),
            })
            .collect()
    };
    let narrow = |_| ProbeError::new(ErrorReason::Decode, format!("a key does not fit $1 ({})", ty.name()));
    Ok(if *ty == Type::INT8_ARRAY {
        PgValue::I64s(ints()?)
    } else if *ty == Type::INT4_ARRAY {
        PgValue::I32s(
            ints()?
                .into_iter()
                .map(i32::try_from)
                .collect::<Result<_, _>>()
                .map_err(narrow)?,
        )
    } else if *ty == Type::INT2_ARRAY {
        PgValue::I16s(
            ints()?
                .into_iter()
                .map(i16::try_from)
                .collect::<Result<_, _>>()
                .map_err(narrow)?,
        )
    } else if [Type::TEXT_ARRAY, Type::VARCHAR_ARRAY, Type::BPCHAR_ARRAY, Type::NAME_ARRAY]
        .contains(ty)
    {
        PgValue::Texts(
            keys.iter()
                .map(|key| match key {
                    Key::Int(n) => n.to_string(),
                    Key::Text { written, .. } => written.clone(),
                })
                .collect(),
        )
    } else {
        return Err(ProbeError::new(
            ErrorReason::Query,
            format!(
                "the derived query's $1 is the keys, an array, but the query takes it as {}; \
                 write `key = ANY($1)` over a bigint or text key, or cast (key::text = \
                 ANY($1::text[]))",
                ty.name()
            ),
        ));
    })
}

/// Column `index` as a raw value, by its SQL type.
fn pg_raw(row: &tokio_postgres::Row, index: usize) -> Result<Raw, ProbeError> {
    let ty = row.columns()[index].type_();
    let decode = |e: tokio_postgres::Error| ProbeError::new(ErrorReason::Decode, e.to_string());
    let raw = if *ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(index).map_err(decode)?.map(Raw::Int)
    } else if *ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(index)
            .map_err(decode)?
            .map(|n| Raw::Int(n.into()))
    } else if *ty == Type::INT2 {
        row.try_get::<_, Option<i16>>(index)
            .map_err(decode)?
            .map(|n| Raw::Int(n.into()))
    } else if *ty == Type::TIMESTAMPTZ || *ty == Type::TIMESTAMP {
        row.try_get::<_, Option<SystemTime>>(index)
            .map_err(decode)?
            .map(|at| Raw::Time(micros_since_epoch(at)))
    } else if <String as tokio_postgres::types::FromSql>::accepts(ty) {
        row.try_get::<_, Option<String>>(index).map_err(decode)?.map(Raw::Text)
    } else {
        return Err(ProbeError::new(
            ErrorReason::Decode,
            format!(
                "column {} is {}, which lagbudget does not read; cast it to bigint, text or \
                 timestamptz in the query",
                index + 1,
                ty.name()
            ),
        ));
    };
    Ok(raw.unwrap_or(Raw::Null))
}

async fn pg_check(
    pool: &PgPool,
    sql: &str,
    shape: Shape,
    deadline: Instant,
) -> Result<(), ProbeError> {
    read_only(pool, deadline, TOO_SLOW, async |tx| {
        let statement = pg_statement(tx, sql, shape).await?;
        match shape.example() {
            Ask::Recent(_) => window_type(&statement.params()[0]).map(|_| ())?,
            other => pg_params(other, statement.params()).map(|_| ())?,
        }
        explain(tx, sql).await
    })
    .await
}

/// `sql` prepared, with as many parameters as `shape` binds and at least its columns.
async fn pg_statement(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
    shape: Shape,
) -> Result<tokio_postgres::Statement, ProbeError> {
    let statement = tx.prepare(sql).await.map_err(|e| query_error(&e))?;
    if statement.params().len() != shape.parameters() {
        return Err(wrong_parameters(shape, statement.params().len()));
    }
    if statement.columns().len() < shape.columns() {
        return Err(too_few_columns(shape, statement.columns().len()));
    }
    Ok(statement)
}

// --- MySQL and MariaDB ------------------------------------------------------------------------

/// `sql` with `$1` and `$2` as `?`, the values bound to them in order (a placeholder written
/// twice is bound twice), and how often each was written. The keys of a lookup become one `?`
/// each.
fn my_bind(
    sql: &str,
    ask: Ask<'_>,
    window_start: Option<i64>,
) -> (String, Vec<MyValue>, [usize; 2]) {
    let mut values = Vec::new();
    let mut used = [0usize; 2];
    let text = fill_placeholders(sql, &["$1", "$2"], |index, out| {
        used[index] += 1;
        match (ask, index) {
            (Ask::Recent(_), 0) => {
                out.push('?');
                values.push(my_datetime(window_start.unwrap_or(0)));
            }
            (
                Ask::SourcePage(Page {
                    after, text_keys, ..
                })
                | Ask::DerivedPage(Page {
                    after, text_keys, ..
                }),
                0,
            ) => {
                out.push('?');
                values.push(match after {
                    Some(Key::Int(n)) => MyValue::Int(*n),
                    Some(key @ Key::Text { .. }) => MyValue::Bytes(key.compared().into_bytes()),
                    None => my_first_cursor(text_keys),
                });
            }
            (Ask::SourcePage(Page { limit, .. }) | Ask::DerivedPage(Page { limit, .. }), _) => {
                out.push('?');
                values.push(MyValue::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
            }
            (Ask::Lookup(keys), 0) => {
                for (i, key) in keys.iter().enumerate() {
                    out.push_str(if i == 0 { "?" } else { ", ?" });
                    values.push(match key {
                        Key::Int(n) => MyValue::Int(*n),
                        Key::Text { written, .. } => MyValue::Bytes(written.clone().into_bytes()),
                    });
                }
            }
            // A `$2` where the statement takes one parameter: left as written, and refused.
            (Ask::Recent(_) | Ask::Lookup(_), _) => out.push_str("$2"),
        }
    });
    (text, values, used)
}

/// The first page's cursor on MySQL, where `$1` has no declared type: the smallest key of
/// the configured type.
fn my_first_cursor(text_keys: bool) -> MyValue {
    if text_keys {
        MyValue::Bytes(Vec::new())
    } else {
        MyValue::Int(i64::MIN)
    }
}

async fn my_ask(
    pool: &MysqlPool,
    sql: &str,
    ask: Ask<'_>,
    deadline: Instant,
) -> Result<Answer, ProbeError> {
    let shape = ask.shape();
    let mut conn = pool.get(deadline).await?;
    let window_start = match ask {
        Ask::Recent(window) => {
            let now = my_now(&mut conn, deadline).await?;
            Some(now - i64::try_from(window.as_micros()).unwrap_or(i64::MAX))
        }
        _ => None,
    };
    let (text, values) = my_values(sql, ask, window_start)?;
    let rows: Vec<MyRow> = run(deadline, conn.exec(text, values)).await?;
    // Ages are taken against the clock after the query: no record it returned is newer.
    let now = match shape.columns() {
        3 => Some(my_now(&mut conn, deadline).await?),
        _ => None,
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.len() < shape.columns() {
            return Err(too_few_columns(shape, row.len()));
        }
        out.push(
            (0..shape.columns())
                .map(|index| my_raw(row, index))
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    conn.release();
    Ok((now, out))
}

/// The statement with `?`s and its values, once its placeholders are checked against what
/// its shape binds.
fn my_values(
    sql: &str,
    ask: Ask<'_>,
    window_start: Option<i64>,
) -> Result<(String, Vec<MyValue>), ProbeError> {
    let shape = ask.shape();
    let (text, values, used) = my_bind(sql, ask, window_start);
    let wanted = shape.parameters();
    let problem = if used[0] == 0 {
        Some("it never uses $1".to_owned())
    } else if wanted == 2 && used[1] == 0 {
        Some("it never uses $2".to_owned())
    } else if wanted == 1 && used[1] > 0 {
        Some("it also uses $2".to_owned())
    } else {
        None
    };
    if let Some(problem) = problem {
        return Err(ProbeError::new(
            ErrorReason::Query,
            format!(
                "the {} is given {} (write them so on MySQL too); {problem}",
                shape.describe(),
                shape.parameters_meaning(),
            ),
        ));
    }
    if count_question_marks(&text) != values.len() {
        return Err(ProbeError::new(
            ErrorReason::Query,
            format!(
                "the {} has a `?` of its own; write its parameters as {}",
                shape.describe(),
                shape.parameters_meaning()
            ),
        ));
    }
    Ok((text, values))
}

fn count_question_marks(sql: &str) -> usize {
    sql.matches('?').count()
}

async fn my_check(
    pool: &MysqlPool,
    sql: &str,
    shape: Shape,
    deadline: Instant,
) -> Result<(), ProbeError> {
    let mut conn = pool.get(deadline).await?;
    // One key, so that the lookup's `$1` becomes one placeholder.
    let one_key = [Key::Int(0)];
    let ask = match shape.example() {
        Ask::Lookup(_) => Ask::Lookup(&one_key),
        other => other,
    };
    let (text, _) = my_values(sql, ask, Some(0))?;
    // Preparing checks syntax, tables and privileges, and counts the columns.
    let statement = run(deadline, conn.prep(text)).await?;
    if statement.columns().len() < shape.columns() {
        return Err(too_few_columns(shape, statement.columns().len()));
    }
    run(deadline, conn.close(statement)).await?;
    conn.release();
    Ok(())
}

/// The server's clock in microseconds, on the same naive scale as the DATETIME values read.
async fn my_now(
    conn: &mut crate::probe::mysql::PooledConn<'_>,
    deadline: Instant,
) -> Result<i64, ProbeError> {
    let row: Option<MyRow> = run(deadline, conn.exec_first("SELECT NOW(6)", ())).await?;
    let row = row.ok_or_else(|| ProbeError::new(ErrorReason::NoData, "NOW(6) returned no row"))?;
    match my_raw(&row, 0)? {
        Raw::Time(micros) => Ok(micros),
        _ => Err(ProbeError::new(ErrorReason::Decode, "NOW(6) is not a time")),
    }
}

/// Column `index` as a raw value.
fn my_raw(row: &MyRow, index: usize) -> Result<Raw, ProbeError> {
    Ok(match row.as_ref(index) {
        None | Some(MyValue::NULL) => Raw::Null,
        Some(MyValue::Int(n)) => Raw::Int(*n),
        Some(MyValue::UInt(n)) => Raw::Int(i64::try_from(*n).map_err(|_| {
            ProbeError::new(ErrorReason::Decode, format!("column {} is above 2^63", index + 1))
        })?),
        Some(MyValue::Bytes(bytes)) => Raw::Text(String::from_utf8(bytes.clone()).map_err(|_| {
            ProbeError::new(
                ErrorReason::Decode,
                format!("column {} is not UTF-8 text", index + 1),
            )
        })?),
        Some(MyValue::Date(year, month, day, hour, minute, second, micros)) => {
            let days = days_from_civil(i64::from(*year), i64::from(*month), i64::from(*day));
            let seconds = days * 86_400
                + i64::from(*hour) * 3_600
                + i64::from(*minute) * 60
                + i64::from(*second);
            Raw::Time(seconds * 1_000_000 + i64::from(*micros))
        }
        Some(other) => {
            return Err(ProbeError::new(
                ErrorReason::Decode,
                format!(
                    "column {} is {other:?}, which lagbudget does not read; cast it to a \
                     signed integer, text or DATETIME in the query",
                    index + 1
                ),
            ));
        }
    })
}

/// Microseconds on the naive scale as a DATETIME value.
fn my_datetime(micros: i64) -> MyValue {
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    MyValue::Date(
        u16::try_from(year).unwrap_or(0),
        month as u8,
        day as u8,
        (of_day / 3_600) as u8,
        (of_day % 3_600 / 60) as u8,
        (of_day % 60) as u8,
        fraction as u32,
    )
}

/// A proleptic Gregorian date from days since 1970-01-01 (Howard Hinnant's algorithm), the
/// inverse of `days_from_civil`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        for days in [-1, 0, 11_017, 20_792, 60_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(20_792), (2026, 12, 5));
    }

    #[test]
    fn mysql_lookups_get_one_placeholder_per_key() {
        let keys = [Key::Int(1), Key::Int(2), Key::Int(3)];
        let (sql, values, _) = my_bind(
            "SELECT id, v FROM t WHERE id IN ($1)",
            Ask::Lookup(&keys),
            None,
        );
        assert_eq!(sql, "SELECT id, v FROM t WHERE id IN (?, ?, ?)");
        assert_eq!(values, vec![MyValue::Int(1), MyValue::Int(2), MyValue::Int(3)]);
        let (sql, values, _) = my_bind(
            "SELECT id, v, at FROM t WHERE id > $1 ORDER BY id LIMIT $2",
            Ask::SourcePage(Page {
                after: Some(&Key::Int(9)),
                limit: 50,
                text_keys: false,
            }),
            None,
        );
        assert_eq!(sql, "SELECT id, v, at FROM t WHERE id > ? ORDER BY id LIMIT ?");
        assert_eq!(values, vec![MyValue::Int(9), MyValue::Int(50)]);
    }

    #[test]
    fn mysql_placeholders_are_checked_against_what_the_statement_is_given() {
        let window = Ask::Recent(Duration::from_secs(60));
        let twice = "SELECT k, v, t FROM a WHERE t > $1 OR u > $1";
        let (sql, values) = my_values(twice, window, Some(0)).expect("twice");
        assert_eq!(sql, "SELECT k, v, t FROM a WHERE t > ? OR u > ?");
        assert_eq!(values.len(), 2);
        let none = my_values("SELECT k, v, t FROM a", window, Some(0));
        assert_eq!(none.expect_err("no $1").reason, ErrorReason::Query);
        let own = my_values("SELECT k, v, t FROM a WHERE t > $1 AND c = ?", window, Some(0));
        assert!(own.expect_err("a ? of its own").message.contains("`?` of its own"));
        let page = Ask::SourcePage(Page {
            after: None,
            limit: 10,
            text_keys: true,
        });
        let no_limit = my_values("SELECT k, v, t FROM a WHERE k > $1", page, None);
        assert!(no_limit.is_err(), "a page needs $2");
        let (_, values) = my_values(
            "SELECT k, v, t FROM a WHERE k > $1 ORDER BY k LIMIT $2",
            page,
            None,
        )
        .expect("page");
        assert_eq!(values, vec![MyValue::Bytes(Vec::new()), MyValue::Int(10)]);
    }

    #[test]
    fn a_text_cursor_for_an_integer_parameter_names_the_key_type_setting() {
        let key = Key::Text {
            compared: "a".into(),
            written: "A".into(),
        };
        let Err(error) = pg_cursor(Some(&key), &Type::INT8) else {
            panic!("a text key is not an int8 cursor");
        };
        assert_eq!(error.reason, ErrorReason::Query);
        assert_eq!(
            error.message,
            "$1 is the last key seen, text with `key_type: text`, but the query takes it as int8"
        );
    }

    #[test]
    fn mysql_windows_are_datetimes() {
        let micros = (20_792 * 86_400 + 3_661) * 1_000_000 + 250_000;
        assert_eq!(my_datetime(micros), MyValue::Date(2026, 12, 5, 1, 1, 1, 250_000));
    }
}
