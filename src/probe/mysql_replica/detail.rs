//! What only a MySQL or MariaDB replica probe knows: the replica's own report of its replication
//! threads, a secondary signal beside the heartbeat lag, never the lag itself; and the metric
//! families it exports. Shown, like lag, only while the probe is fresh; the API shows none of it.

use crate::families::{Exposition, FamilyBuilder, Labels, bool_value, gauge, with_label};

pub const MYSQL_REPLICATION_RUNNING: &str = "lagbudget_mysql_replication_running";
pub const MYSQL_SECONDS_BEHIND_SOURCE: &str = "lagbudget_mysql_seconds_behind_source";

/// A replica's replication threads, from `SHOW REPLICA STATUS` / `SHOW SLAVE STATUS`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MysqlReplicaDetail {
    /// `Slave_IO_Running` / `Replica_IO_Running` is `Yes`.
    pub io_running: bool,
    /// `Slave_SQL_Running` / `Replica_SQL_Running` is `Yes`.
    pub sql_running: bool,
    /// `Seconds_Behind_Master` / `_Source`, only while both threads run: it is NULL when a
    /// thread stopped (which is "down", never 0) and reads 0 while the IO thread is behind.
    pub seconds_behind_source: Option<f64>,
}

/// The families only `mysql_replica` probes fill, from fresh probes' details.
pub struct Families {
    running: FamilyBuilder,
    behind: FamilyBuilder,
}

impl Default for Families {
    fn default() -> Self {
        Self::new()
    }
}

impl Families {
    pub fn new() -> Self {
        Self {
            running: gauge(
                MYSQL_REPLICATION_RUNNING,
                "1 while the replica's replication thread (thread=\"io\" or \"sql\") runs; absent while stale.",
            ),
            behind: gauge(
                MYSQL_SECONDS_BEHIND_SOURCE,
                "The replica's own Seconds_Behind_Master/_Source, only while both replication threads \
                 run (NULL is down, not 0); a secondary signal, the heartbeat lag is the lag.",
            ),
        }
    }

    /// Adds the series of one fresh probe, labelled `labels`.
    pub fn push(&mut self, labels: &Labels, detail: &MysqlReplicaDetail) {
        for (thread, running) in [("io", detail.io_running), ("sql", detail.sql_running)] {
            self.running
                .push(&with_label(labels, ("thread", thread)), bool_value(running));
        }
        if let Some(behind) = detail.seconds_behind_source {
            self.behind.push(labels, behind);
        }
    }

    pub fn finish(self, out: &mut Exposition) {
        self.running.finish(out);
        self.behind.finish(out);
    }
}
