//! The source-side comparison that cache and HTTP-view probes share, against the machine's
//! PostgreSQL and MariaDB: a version held back ⇒ the age of the oldest newer change on the
//! database's own clock; a current version ⇒ 0; a sample of entities ⇒ one query, one row per
//! entity that trails. Tolerance: the expected age is read from the same server's clock just
//! before the comparison and the answer must fall between that and a second reading after it.

use std::time::Duration;

use lagbudget::probe::SourceHandles;
use lagbudget::probe::oldest_pending::{Entity, OldestPending, Shape, SourceComparison};
use mysql_async::prelude::Queryable;
use tokio::time::Instant;

use crate::support::{SHARED_PG_DSN, connect, load_config, unique};

const MARIADB_URL: &str = "mysql://root@127.0.0.1:3306/test";

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

fn comparison(query: &str) -> SourceComparison {
    let config = load_config(&format!(
        "sources:\n  pg: {{ postgres: {{ dsn: \"{SHARED_PG_DSN}\" }} }}\n  my: {{ mysql: {{ url: \"{MARIADB_URL}\" }} }}\n"
    ));
    let handles = SourceHandles::build(&config, None).expect("handles");
    let source = if query.contains('?') { "my" } else { "pg" };
    SourceComparison::new(
        &OldestPending {
            source: source.to_owned(),
            query: query.to_owned(),
        },
        &handles,
    )
    .expect("comparison")
}

fn entity(key: &str, version: i64) -> Entity {
    Entity {
        key: key.to_owned(),
        id: key.rsplit(':').next().unwrap_or(key).to_owned(),
        version: version.to_string(),
    }
}

#[tokio::test]
async fn postgres_answers_with_the_age_of_the_oldest_newer_change() {
    let pg = connect(SHARED_PG_DSN).await;
    let table = unique("changes");
    pg.batch_execute(&format!(
        "CREATE TABLE {table} (entity bigint, seq bigint, changed_at timestamptz);
         INSERT INTO {table} VALUES
           (1, 1, now() - interval '60 seconds'),
           (1, 2, now() - interval '7 seconds'),
           (2, 3, now() - interval '3 seconds'),
           (3, 4, now() - interval '90 seconds');"
    ))
    .await
    .expect("setup");
    let age_of = |seq: i64| {
        let pg = &pg;
        let table = &table;
        async move {
            let row = pg
                .query_one(
                    &format!(
                        "SELECT extract(epoch FROM clock_timestamp() - changed_at)::float8 \
                         FROM {table} WHERE seq = $1"
                    ),
                    &[&seq],
                )
                .await
                .expect("age");
            row.get::<_, f64>(0)
        }
    };

    let one = comparison(&format!(
        "SELECT min(changed_at), count(*) FROM {table} WHERE entity < 3 AND seq > $1"
    ));
    one.check(Shape::OneVersion, deadline())
        .await
        .expect("check");
    let before = age_of(2).await;
    let pending = one.one("1", deadline()).await.expect("held back");
    let after = age_of(2).await;
    assert!(
        before <= pending.lag_seconds && pending.lag_seconds <= after,
        "lag {} not within [{before}, {after}]",
        pending.lag_seconds
    );
    assert_eq!(pending.count, Some(2));
    let current = one.one("3", deadline()).await.expect("current");
    assert_eq!((current.lag_seconds, current.count), (0.0, Some(0)));
    let text = one.one("x", deadline()).await.expect_err("not a number");
    assert_eq!(text.reason.as_str(), "decode");

    let entities = comparison(&format!(
        "SELECT c.key, min(ch.changed_at) \
         FROM jsonb_to_recordset($1::jsonb) AS c(key text, id bigint, version bigint) \
         JOIN {table} ch ON ch.entity = c.id AND ch.seq > c.version GROUP BY c.key"
    ));
    entities
        .check(Shape::Entities, deadline())
        .await
        .expect("check");
    let before = age_of(2).await;
    let answer = entities
        .entities(
            &[entity("p:1", 1), entity("p:2", 3), entity("p:3", 4)],
            deadline(),
        )
        .await
        .expect("entities");
    let after = age_of(2).await;
    assert_eq!(answer.stale.len(), 1, "{answer:?}");
    assert_eq!(answer.stale[0].key, "p:1");
    assert!(before <= answer.stale[0].lag_seconds && answer.stale[0].lag_seconds <= after);

    // The one-version shape asked of an entity query is refused by check, and vice versa.
    assert!(one.check(Shape::Entities, deadline()).await.is_err());
    assert!(entities.check(Shape::OneVersion, deadline()).await.is_err());
    let two = comparison(&format!(
        "SELECT min(changed_at) FROM {table} WHERE seq > $1 AND seq < $2"
    ));
    let error = two.one("1", deadline()).await.expect_err("two parameters");
    assert!(error.message.contains("takes 2 parameters"), "{error}");
    pg.batch_execute(&format!("DROP TABLE {table}"))
        .await
        .expect("drop");
}

#[tokio::test]
async fn mariadb_answers_on_its_own_clock_for_datetime_and_timestamp_columns() {
    let opts = mysql_async::Opts::from_url(MARIADB_URL).expect("url");
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .unwrap_or_else(|e| panic!("MariaDB at {MARIADB_URL} must be running for this test: {e}"));
    let table = unique("changes");
    conn.query_drop(format!(
        "CREATE TABLE {table} (entity BIGINT, seq BIGINT, at_dt DATETIME(6), at_ts TIMESTAMP(6) NULL);
         INSERT INTO {table} VALUES
           (1, 1, NOW(6) - INTERVAL 60 SECOND, NOW(6) - INTERVAL 60 SECOND),
           (1, 2, NOW(6) - INTERVAL 7 SECOND, NOW(6) - INTERVAL 7 SECOND),
           (2, 3, NOW(6) - INTERVAL 3 SECOND, NOW(6) - INTERVAL 3 SECOND);"
    ))
    .await
    .expect("setup");
    let age_query = format!(
        "SELECT TIMESTAMPDIFF(MICROSECOND, at_dt, NOW(6)) / 1e6 FROM {table} WHERE seq = 2"
    );

    for column in ["at_dt", "at_ts"] {
        let one = comparison(&format!(
            "SELECT MIN({column}), COUNT(*) FROM {table} WHERE seq > ?"
        ));
        one.check(Shape::OneVersion, deadline())
            .await
            .expect("check");
        let before: f64 = conn
            .query_first(&age_query)
            .await
            .expect("age")
            .expect("row");
        let pending = one.one("1", deadline()).await.expect("held back");
        let after: f64 = conn
            .query_first(&age_query)
            .await
            .expect("age")
            .expect("row");
        assert!(
            before <= pending.lag_seconds && pending.lag_seconds <= after,
            "{column}: lag {} not within [{before}, {after}]",
            pending.lag_seconds
        );
        assert_eq!(pending.count, Some(2));
        let current = one.one("3", deadline()).await.expect("current");
        assert_eq!((current.lag_seconds, current.count), (0.0, Some(0)));
    }

    let entities = comparison(&format!(
        "SELECT c.k, MIN(ch.at_dt) FROM JSON_TABLE(?, '$[*]' COLUMNS(
             k VARCHAR(200) PATH '$.key', id BIGINT PATH '$.id', version BIGINT PATH '$.version')) AS c
         JOIN {table} ch ON ch.entity = c.id AND ch.seq > c.version GROUP BY c.k"
    ));
    entities
        .check(Shape::Entities, deadline())
        .await
        .expect("check");
    let before: f64 = conn
        .query_first(&age_query)
        .await
        .expect("age")
        .expect("row");
    let answer = entities
        .entities(&[entity("p:1", 1), entity("p:2", 3)], deadline())
        .await
        .expect("entities");
    let after: f64 = conn
        .query_first(&age_query)
        .await
        .expect("age")
        .expect("row");
    assert_eq!(answer.stale.len(), 1, "{answer:?}");
    assert_eq!(answer.stale[0].key, "p:1");
    let lag = answer.stale[0].lag_seconds;
    assert!(
        before <= lag && lag <= after,
        "lag {lag} not within [{before}, {after}]"
    );
    conn.query_drop(format!("DROP TABLE {table}"))
        .await
        .expect("drop");
    conn.disconnect().await.expect("disconnect");
}
