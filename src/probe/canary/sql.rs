//! Canary markers in PostgreSQL and MySQL: a row of lagbudget's own table
//! (`<schema>.canary`, one row per instance and probe, upserted), or a statement and a query the
//! user writes with `$instance`, `$probe` and `$seq` placeholders, sent as bound parameters.

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use tokio::time::{Instant, timeout_at};
use tokio_postgres::types::ToSql;

use super::{Marker, fill_placeholders};
use super::config::{Canary, ReadTarget, WriteTarget};
use crate::probe::mysql::{MysqlPool, run};
use crate::probe::mysql_replica::int_at;
use crate::probe::postgres::{PgPool, query_error};
use crate::probe::{ErrorReason, ProbeError, SourceHandle};

/// The placeholders a user's statement may use, in the order the managed statements bind them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placeholder {
    Instance,
    Probe,
    Seq,
}

impl Placeholder {
    const ALL: [(Placeholder, &'static str); 3] = [
        (Placeholder::Instance, "$instance"),
        (Placeholder::Probe, "$probe"),
        (Placeholder::Seq, "$seq"),
    ];

    /// The PostgreSQL cast that fixes the parameter's type whatever the column's: the value
    /// is bound as text or bigint and converted by the server.
    fn pg_cast(self) -> &'static str {
        match self {
            Placeholder::Instance | Placeholder::Probe => "::text",
            Placeholder::Seq => "::bigint",
        }
    }
}

/// A statement with its placeholders replaced for one dialect, and the values to bind in order.
#[derive(Debug, Clone, PartialEq)]
struct Bound {
    sql: String,
    params: Vec<Placeholder>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Postgres,
    Mysql,
}

/// Replaces `$instance`, `$probe` and `$seq` (not followed by a letter, digit or `_`) with
/// `$n::type` (PostgreSQL, numbered by first use) or `?` (MySQL, one per use).
fn bind(template: &str, dialect: Dialect) -> Bound {
    let names = Placeholder::ALL.map(|(_, name)| name);
    let mut params: Vec<Placeholder> = Vec::new();
    let sql = fill_placeholders(template, &names, |index, sql| {
        let placeholder = Placeholder::ALL[index].0;
        match dialect {
            Dialect::Postgres => {
                let number = match params.iter().position(|p| *p == placeholder) {
                    Some(at) => at,
                    None => {
                        params.push(placeholder);
                        params.len() - 1
                    }
                };
                sql.push_str(&format!("${}{}", number + 1, placeholder.pg_cast()));
            }
            Dialect::Mysql => {
                params.push(placeholder);
                sql.push('?');
            }
        }
    });
    Bound { sql, params }
}

/// The managed marker statements for one schema. The schema is a checked plain identifier, so
/// it needs no quoting and cannot inject SQL.
fn managed_write(schema: &str, dialect: Dialect) -> Bound {
    let sql = match dialect {
        Dialect::Postgres => format!(
            "INSERT INTO {schema}.canary AS c (instance, probe, seq, written_at) \
             VALUES ($instance, $probe, $seq, clock_timestamp()) \
             ON CONFLICT (instance, probe) DO UPDATE \
             SET seq = EXCLUDED.seq, written_at = EXCLUDED.written_at"
        ),
        Dialect::Mysql => format!(
            "INSERT INTO `{schema}`.`canary` (instance, probe, seq, written_at) \
             VALUES ($instance, $probe, $seq, NOW(6)) \
             ON DUPLICATE KEY UPDATE seq = VALUES(seq), written_at = VALUES(written_at)"
        ),
    };
    bind(&sql, dialect)
}

fn managed_read(schema: &str, dialect: Dialect) -> Bound {
    let sql = match dialect {
        Dialect::Postgres => {
            format!("SELECT seq FROM {schema}.canary WHERE instance = $instance AND probe = $probe")
        }
        Dialect::Mysql => format!(
            "SELECT seq FROM `{schema}`.`canary` WHERE instance = $instance AND probe = $probe"
        ),
    };
    bind(&sql, dialect)
}

/// The DDL of lagbudget's marker table, as documented in the README: one row per (instance,
/// probe), so the table stays as small as the number of canaries.
pub fn create_table_sql(schema: &str) -> String {
    format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}; \
         CREATE TABLE IF NOT EXISTS {schema}.canary ( \
         instance text NOT NULL, probe text NOT NULL, seq bigint NOT NULL, \
         written_at timestamptz NOT NULL, PRIMARY KEY (instance, probe))"
    )
}

fn mysql_ddl(schema: &str) -> [String; 2] {
    [
        format!("CREATE DATABASE IF NOT EXISTS `{schema}`"),
        format!(
            "CREATE TABLE IF NOT EXISTS `{schema}`.`canary` (\
             instance VARCHAR(64) NOT NULL, \
             probe VARCHAR(512) CHARACTER SET ascii NOT NULL, \
             seq BIGINT NOT NULL, \
             written_at DATETIME(6) NOT NULL, \
             PRIMARY KEY (instance, probe)) ENGINE=InnoDB"
        ),
    ]
}

/// A connection to one SQL source.
#[derive(Clone)]
enum Database {
    Postgres(Arc<PgPool>),
    Mysql(Arc<MysqlPool>),
}

impl Database {
    fn of(handle: &SourceHandle) -> Result<Self, ProbeError> {
        match handle {
            SourceHandle::Postgres(pool) => Ok(Database::Postgres(pool.clone())),
            SourceHandle::Mysql(pool) => Ok(Database::Mysql(pool.clone())),
            _ => Err(ProbeError::new(
                ErrorReason::Connect,
                "a canary SQL statement needs a postgres or mysql source",
            )),
        }
    }

    fn dialect(&self) -> Dialect {
        match self {
            Database::Postgres(_) => Dialect::Postgres,
            Database::Mysql(_) => Dialect::Mysql,
        }
    }

    /// Creates lagbudget's marker table when it is missing.
    async fn ensure_table(&self, schema: &str, deadline: Instant) -> Result<(), ProbeError> {
        match self {
            Database::Postgres(pool) => {
                let client = pool.get(deadline).await?;
                // Checked first: `CREATE SCHEMA IF NOT EXISTS` needs CREATE on the database
                // even when the schema exists, and a least-privilege role may only have the
                // table's grants.
                let exists: bool = timeout_at(
                    deadline,
                    client.query_one(
                        &format!("SELECT to_regclass('{schema}.canary') IS NOT NULL"),
                        &[],
                    ),
                )
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| query_error(&e))?
                .get(0);
                if !exists {
                    timeout_at(deadline, client.batch_execute(&create_table_sql(schema)))
                        .await
                        .map_err(|_| timed_out())?
                        .map_err(|e| query_error(&e))?;
                }
                client.release();
                Ok(())
            }
            Database::Mysql(pool) => {
                let mut conn = pool.get(deadline).await?;
                for ddl in mysql_ddl(schema) {
                    run(deadline, conn.query_drop(ddl)).await?;
                }
                conn.release();
                Ok(())
            }
        }
    }

    /// What this server has of lagbudget's marker table, asked without touching it (for
    /// `check --connect`).
    async fn managed_table(&self, schema: &str, deadline: Instant) -> Result<TableAccess, ProbeError> {
        match self {
            Database::Postgres(pool) => {
                let client = pool.get(deadline).await?;
                let row = timeout_at(
                    deadline,
                    client.query_one(
                        "SELECT to_regclass($1) IS NOT NULL, \
                         CASE WHEN to_regclass($1) IS NULL THEN NULL ELSE \
                         has_table_privilege($1, 'SELECT') AND has_table_privilege($1, 'INSERT') \
                         AND has_table_privilege($1, 'UPDATE') END, \
                         has_database_privilege(current_database(), 'CREATE')",
                        &[&format!("{schema}.canary")],
                    ),
                )
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| query_error(&e))?;
                client.release();
                Ok(TableAccess {
                    exists: row.get(0),
                    writable: row.get(1),
                    can_create: Some(row.get(2)),
                })
            }
            Database::Mysql(pool) => {
                let mut conn = pool.get(deadline).await?;
                let count: Option<i64> = run(
                    deadline,
                    conn.exec_first(
                        "SELECT COUNT(*) FROM information_schema.tables \
                         WHERE table_schema = ? AND table_name = 'canary'",
                        (schema,),
                    ),
                )
                .await?;
                conn.release();
                // MySQL checks a statement's grants when it is prepared: the writer's check
                // prepares its upsert rather than reading the grant tables.
                Ok(TableAccess {
                    exists: count.unwrap_or(0) > 0,
                    writable: None,
                    can_create: None,
                })
            }
        }
    }

    /// Runs `bound` with the values of `marker`; returns the first column of the first row as
    /// an integer when `read`.
    async fn execute(
        &self,
        bound: &Bound,
        marker: &Marker<'_>,
        read: bool,
        deadline: Instant,
    ) -> Result<Option<i64>, ProbeError> {
        match self {
            Database::Postgres(pool) => {
                let client = pool.get(deadline).await?;
                let texts: Vec<Box<dyn ToSql + Sync + Send>> = bound
                    .params
                    .iter()
                    .map(|p| -> Box<dyn ToSql + Sync + Send> {
                        match p {
                            Placeholder::Instance => Box::new(marker.instance.to_owned()),
                            Placeholder::Probe => Box::new(marker.probe.to_owned()),
                            Placeholder::Seq => Box::new(marker.seq),
                        }
                    })
                    .collect();
                let params: Vec<&(dyn ToSql + Sync)> = texts
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                let answer = if read {
                    let rows = timeout_at(deadline, client.query(bound.sql.as_str(), &params))
                        .await
                        .map_err(|_| timed_out())?
                        .map_err(|e| query_error(&e))?;
                    first_integer_pg(&rows)?
                } else {
                    timeout_at(deadline, client.execute(bound.sql.as_str(), &params))
                        .await
                        .map_err(|_| timed_out())?
                        .map_err(|e| query_error(&e))?;
                    None
                };
                client.release();
                Ok(answer)
            }
            Database::Mysql(pool) => {
                let mut conn = pool.get(deadline).await?;
                let params: Vec<mysql_async::Value> = bound
                    .params
                    .iter()
                    .map(|p| match p {
                        Placeholder::Instance => marker.instance.into(),
                        Placeholder::Probe => marker.probe.into(),
                        Placeholder::Seq => marker.seq.into(),
                    })
                    .collect();
                let params = if params.is_empty() {
                    mysql_async::Params::Empty
                } else {
                    mysql_async::Params::Positional(params)
                };
                let answer = if read {
                    let row: Option<mysql_async::Row> =
                        run(deadline, conn.exec_first(bound.sql.as_str(), params)).await?;
                    match row {
                        Some(row) => int_at(&row, 0)?,
                        None => None,
                    }
                } else {
                    run(deadline, conn.exec_drop(bound.sql.as_str(), params)).await?;
                    None
                };
                conn.release();
                Ok(answer)
            }
        }
    }

    /// Prepares `bound` without running it: syntax, objects and grants the server checks at
    /// prepare time.
    async fn prepare(&self, bound: &Bound, deadline: Instant) -> Result<(), ProbeError> {
        match self {
            Database::Postgres(pool) => {
                let client = pool.get(deadline).await?;
                timeout_at(deadline, client.prepare(&bound.sql))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|e| query_error(&e))?;
                client.release();
            }
            Database::Mysql(pool) => {
                let mut conn = pool.get(deadline).await?;
                run(deadline, conn.prep(bound.sql.as_str())).await?;
                conn.release();
            }
        }
        Ok(())
    }
}

/// The seq in the first column of the first row: NULL or no row is "no marker visible".
fn first_integer_pg(rows: &[tokio_postgres::Row]) -> Result<Option<i64>, ProbeError> {
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    if row.is_empty() {
        return Err(ProbeError::new(
            ErrorReason::Decode,
            "the canary query returned a row without columns; return the highest visible seq",
        ));
    }
    if let Ok(seq) = row.try_get::<_, Option<i64>>(0) {
        return Ok(seq);
    }
    if let Ok(seq) = row.try_get::<_, Option<i32>>(0) {
        return Ok(seq.map(i64::from));
    }
    if let Ok(seq) = row.try_get::<_, Option<String>>(0) {
        return seq
            .map(|text| {
                text.trim().parse::<i64>().map_err(|_| {
                    ProbeError::new(ErrorReason::Decode, format!("seq {text:?} is not an integer"))
                })
            })
            .transpose();
    }
    Err(ProbeError::new(
        ErrorReason::Decode,
        format!(
            "the canary query's first column is {}; return the seq as bigint, integer or text",
            row.columns()[0].type_()
        ),
    ))
}

fn timed_out() -> ProbeError {
    ProbeError::new(
        ErrorReason::Timeout,
        "the canary statement did not complete before the deadline",
    )
}

/// What a server has of lagbudget's marker table.
struct TableAccess {
    exists: bool,
    /// SELECT, INSERT and UPDATE on the table (PostgreSQL, when it exists).
    writable: Option<bool>,
    /// CREATE on the database (PostgreSQL).
    can_create: Option<bool>,
}

/// Writes markers to a postgres or mysql source.
pub struct SqlWriter {
    database: Database,
    statement: Bound,
    /// lagbudget's own table, created on the first write (and again after a failure).
    managed_schema: Option<String>,
    table_ready: bool,
}

impl SqlWriter {
    pub fn new(spec: &Canary, handle: &SourceHandle) -> Result<Self, ProbeError> {
        let database = Database::of(handle)?;
        let dialect = database.dialect();
        let (statement, managed_schema) = match &spec.write.target {
            WriteTarget::Sql(sql) => (bind(sql, dialect), None),
            _ => (
                managed_write(&spec.schema, dialect),
                Some(spec.schema.clone()),
            ),
        };
        Ok(Self {
            database,
            statement,
            managed_schema,
            table_ready: false,
        })
    }

    pub async fn write(&mut self, marker: &Marker<'_>, deadline: Instant) -> Result<(), ProbeError> {
        if let (Some(schema), false) = (&self.managed_schema, self.table_ready) {
            self.database.ensure_table(schema, deadline).await?;
            self.table_ready = true;
        }
        let written = self
            .database
            .execute(&self.statement, marker, false, deadline)
            .await;
        if written.is_err() {
            // Whatever failed (a new server, a dropped table), look again next time.
            self.table_ready = false;
        }
        written.map(|_| ())
    }

    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let Some(schema) = &self.managed_schema else {
            self.database.prepare(&self.statement, deadline).await?;
            return Ok("the marker statement is accepted".to_owned());
        };
        // Reached and its grants checked, without creating or writing anything.
        let table = format!("{schema}.canary");
        let access = self.database.managed_table(schema, deadline).await?;
        match access {
            TableAccess { exists: true, writable: Some(false), .. } => Err(ProbeError::new(
                ErrorReason::Query,
                format!("the writer's role needs SELECT, INSERT and UPDATE on {table}"),
            )),
            TableAccess { exists: true, .. } => {
                self.database.prepare(&self.statement, deadline).await?;
                Ok(format!("{table} writable"))
            }
            TableAccess { can_create: Some(false), .. } => Err(ProbeError::new(
                ErrorReason::Query,
                format!(
                    "{table} does not exist and the writer's role cannot create it: create it \
                     as documented, or grant CREATE on the database"
                ),
            )),
            TableAccess { .. } => Ok(format!("{table} missing, created by the first write")),
        }
    }
}

/// Reads the highest marker a postgres or mysql view shows.
pub struct SqlReader {
    database: Database,
    query: Bound,
    /// lagbudget's own table, read where the writer's replication puts it.
    managed_schema: Option<String>,
    instance: String,
    probe: String,
}

impl SqlReader {
    pub fn new(spec: &Canary, probe: &str, handle: &SourceHandle) -> Result<Self, ProbeError> {
        let database = Database::of(handle)?;
        let dialect = database.dialect();
        let (query, managed_schema) = match &spec.read.target {
            ReadTarget::Sql(query) => (bind(query, dialect), None),
            _ => (
                managed_read(&spec.schema, dialect),
                Some(spec.schema.clone()),
            ),
        };
        Ok(Self {
            database,
            query,
            managed_schema,
            instance: spec.instance.clone(),
            probe: probe.to_owned(),
        })
    }

    pub async fn read(&mut self, deadline: Instant) -> Result<Option<i64>, ProbeError> {
        let marker = Marker {
            instance: &self.instance,
            probe: &self.probe,
            seq: 0,
            written_at: 0.0,
        };
        self.database
            .execute(&self.query, &marker, true, deadline)
            .await
    }

    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        if let Some(schema) = &self.managed_schema {
            // Before the first write there is no table to read: not an error of the view.
            if !self.database.managed_table(schema, deadline).await?.exists {
                return Ok(format!(
                    "{schema}.canary not here yet: the first write creates it at the write \
                     source, and the view must show it from there"
                ));
            }
        }
        // Reading is what a run does, and changes nothing.
        let seq = self.read(deadline).await?;
        Ok(match seq {
            Some(seq) => format!("shows marker seq {seq}"),
            None => "shows no marker of this instance yet".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_numbered_typed_parameters_on_postgres() {
        let bound = bind(
            "UPDATE t SET seq = $seq WHERE who = $instance AND seq < $seq AND x = '$1' AND $seqs",
            Dialect::Postgres,
        );
        assert_eq!(
            bound.sql,
            "UPDATE t SET seq = $1::bigint WHERE who = $2::text AND seq < $1::bigint AND x = '$1' \
             AND $seqs"
        );
        assert_eq!(bound.params, [Placeholder::Seq, Placeholder::Instance]);
    }

    #[test]
    fn placeholders_become_one_question_mark_per_use_on_mysql() {
        let bound = bind(
            "SELECT max(seq) FROM t WHERE who = $instance AND p = $probe OR who = $instance",
            Dialect::Mysql,
        );
        assert_eq!(
            bound.sql,
            "SELECT max(seq) FROM t WHERE who = ? AND p = ? OR who = ?"
        );
        assert_eq!(
            bound.params,
            [Placeholder::Instance, Placeholder::Probe, Placeholder::Instance]
        );
    }
}
