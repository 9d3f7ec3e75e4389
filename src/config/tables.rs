//! The key tables: every mapping of the config file with its keys, their types, defaults and
//! descriptions.
//!
//! The decoder reads mappings only through these tables (unknown keys, required keys, types and
//! defaults all come from here) and the JSON schema is generated from the same tables, so what
//! the daemon accepts and what editors suggest cannot drift apart.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

/// One mapping shape of the config file.
#[derive(Debug)]
pub(crate) struct Table {
    /// The name of this shape under `$defs` in the JSON schema.
    pub id: &'static str,
    pub doc: &'static str,
    pub keys: &'static [Key],
    /// Externally tagged variants (`postgres: {…}`, `sql_watermark: {…}`): exactly one of these
    /// keys must be present.
    pub kinds: Option<&'static Kinds>,
    /// Keys of which exactly one must be present (`topics` or `topic_pattern`). Empty: none.
    pub one_of: &'static [&'static str],
}

#[derive(Debug)]
pub(crate) struct Key {
    pub name: &'static str,
    pub ty: Type,
    pub required: bool,
    pub default: Option<DefaultValue>,
    pub doc: &'static str,
}

/// The variants a mapping may be tagged with.
#[derive(Debug)]
pub(crate) struct Kinds {
    /// What a variant is called in messages: "source", "probe".
    pub what: &'static str,
    /// One key per variant; each has a `Type::Table` with the variant's settings.
    pub variants: &'static [Key],
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Type {
    String {
        non_empty: bool,
    },
    /// A budget, probe or source name: `[A-Za-z0-9][A-Za-z0-9_.-]*`.
    Name,
    /// A duration string (`30s`); `positive` rejects `0s`.
    Duration {
        positive: bool,
    },
    /// A percentage string (`99.9%`) above 0%, and at most or below 100%.
    Percent {
        max_inclusive: bool,
    },
    Integer {
        min: i64,
        max: Option<i64>,
    },
    SocketAddr,
    Enum(&'static [&'static str]),
    /// `true` or `false`.
    Bool,
    /// A list of strings; `non_empty` requires at least one item and no empty item.
    StringList {
        non_empty: bool,
    },
    /// Prometheus label names to strings.
    Labels,
    /// Free-form keys (`security.protocol`) to scalar values, read as strings. `reserved` keys
    /// are rejected, each with the reason.
    StringMap {
        reserved: &'static [Reserved],
    },
    Table(&'static Table),
    TableList {
        table: &'static Table,
        non_empty: bool,
    },
    /// Names (`Type::Name`) to tables.
    TableMap(&'static Table),
}

/// A key of a `Type::StringMap` that the config may not set, and why.
#[derive(Debug)]
pub(crate) struct Reserved {
    pub name: &'static str,
    /// Completes "property `name` is set by lagbudget: …".
    pub reason: &'static str,
}

/// A default, typed so the decoder applies exactly what the schema documents.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DefaultValue {
    Duration(Duration),
    /// Whole percent (80 for `80%`).
    Percent(u32),
    Integer(i64),
    Str(&'static str),
    SocketAddr(SocketAddr),
    Bool(bool),
}

/// How often a probe runs when nothing else says so.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// How long one probe run may take when nothing else says so.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 9464));

const fn key(name: &'static str, ty: Type, doc: &'static str) -> Key {
    Key {
        name,
        ty,
        required: false,
        default: None,
        doc,
    }
}

const fn required(name: &'static str, ty: Type, doc: &'static str) -> Key {
    Key {
        name,
        ty,
        required: true,
        default: None,
        doc,
    }
}

const fn defaulted(name: &'static str, ty: Type, default: DefaultValue, doc: &'static str) -> Key {
    Key {
        name,
        ty,
        required: false,
        default: Some(default),
        doc,
    }
}

const POSITIVE_DURATION: Type = Type::Duration { positive: true };
const ANY_DURATION: Type = Type::Duration { positive: false };
const TEXT: Type = Type::String { non_empty: false };
const NON_EMPTY_TEXT: Type = Type::String { non_empty: true };
const STRINGS: Type = Type::StringList { non_empty: false };
const NON_EMPTY_STRINGS: Type = Type::StringList { non_empty: true };

pub(crate) static ROOT: Table = Table {
    id: "config",
    doc: "lagbudget configuration: sources to read from and consistency budgets to enforce.",
    keys: &[
        defaulted(
            "listen",
            Type::SocketAddr,
            DefaultValue::SocketAddr(DEFAULT_LISTEN),
            "Address (IP:PORT) of the HTTP server for /metrics and the API, unless the command \
             line overrides it. Main file only.",
        ),
        key(
            "include",
            STRINGS,
            "Glob patterns of further files with `sources` and `budgets`, relative to this \
             file's directory, loaded in sorted order. A pattern without glob characters must \
             match a file. Main file only.",
        ),
        key(
            "defaults",
            Type::Table(&DEFAULTS),
            "Defaults for every probe. Main file only.",
        ),
        key(
            "http",
            Type::Table(&HTTP),
            "Settings of the status API. Main file only.",
        ),
        key(
            "sources",
            Type::TableMap(&SOURCE),
            "Named connections that probes read from.",
        ),
        key(
            "budgets",
            Type::TableList {
                table: &BUDGET,
                non_empty: false,
            },
            "Consistency budgets: how far each feature's derived views may trail their source.",
        ),
    ],
    kinds: None,
    one_of: &[],
};

pub(crate) static DEFAULTS: Table = Table {
    id: "defaults",
    doc: "Defaults for every probe; a budget's or probe's own setting wins.",
    keys: &[
        defaulted(
            "interval",
            POSITIVE_DURATION,
            DefaultValue::Duration(DEFAULT_INTERVAL),
            "How often each probe runs; never less often than max_lag / 3.",
        ),
        defaulted(
            "timeout",
            POSITIVE_DURATION,
            DefaultValue::Duration(DEFAULT_TIMEOUT),
            "How long one probe run may take, waiting for a connection included; never longer \
             than the interval.",
        ),
        key(
            "stall_after",
            POSITIVE_DURATION,
            "How long a probe may be behind without progress before it counts as stalled. \
             Default: max_lag or 3 intervals, whichever is longer.",
        ),
    ],
    kinds: None,
    one_of: &[],
};

pub(crate) static HTTP: Table = Table {
    id: "http",
    doc: "Settings of the status API that product pages call from browsers.",
    keys: &[
        key(
            "cors_allowed_origins",
            STRINGS,
            "Origins allowed by CORS on /api/v1/*; `*` allows any. Empty: no CORS headers.",
        ),
        defaulted(
            "api_cache_max_age",
            ANY_DURATION,
            DefaultValue::Duration(Duration::from_secs(1)),
            "Cache-Control max-age of /api/v1/* answers.",
        ),
    ],
    kinds: None,
    one_of: &[],
};

pub(crate) static SOURCE: Table = Table {
    id: "source",
    doc: "A named connection, tagged with its kind.",
    keys: &[],
    kinds: Some(&SOURCE_KINDS),
    one_of: &[],
};

pub(crate) static SOURCE_KINDS: Kinds = Kinds {
    what: "source",
    variants: &[
        key("postgres", Type::Table(&POSTGRES), "A PostgreSQL server."),
        key(
            "kafka",
            Type::Table(&KAFKA),
            "A Kafka cluster, reached through its bootstrap brokers.",
        ),
        key(
            "rabbitmq",
            Type::Table(&RABBITMQ),
            "A RabbitMQ node, read through its management HTTP API.",
        ),
        key("redis", Type::Table(&REDIS), "A Redis server."),
        key(
            "nats",
            Type::Table(&NATS),
            "A NATS server with JetStream, reached through the client protocol.",
        ),
        key("mysql", Type::Table(&MYSQL), "A MySQL or MariaDB server."),
    ],
};

pub(crate) static POSTGRES: Table = Table {
    id: "postgres",
    doc: "A PostgreSQL server.",
    keys: &[
        required(
            "dsn",
            NON_EMPTY_TEXT,
            "libpq-style connection string (`host=… user=… dbname=…`) or URL. Put the password \
             in ${VAR} or ${file:/path}.",
        ),
        defaulted(
            "max_connections",
            Type::Integer {
                min: 1,
                max: Some(64),
            },
            DefaultValue::Integer(4),
            "Connections shared by every probe of this source, at most.",
        ),
    ],
    kinds: None,
    one_of: &[],
};

pub(crate) static MYSQL: Table = Table {
    id: "mysql",
    doc: "A MySQL or MariaDB server.",
    keys: &[
        required(
            "url",
            NON_EMPTY_TEXT,
            "Connection URL: mysql://user:password@host:3306/database. Put the password in \
             ${VAR} or ${file:/path}.",
        ),
        defaulted(
            "max_connections",
            Type::Integer {
                min: 1,
                max: Some(64),
            },
            DefaultValue::Integer(4),
            "Connections shared by every probe of this source, at most.",
        ),
    ],
    kinds: None,
    one_of: &[],
};

/// librdkafka properties that lagbudget's Kafka reader sets itself: letting a config change
/// them would make the reader join the measured group, commit, or read uncommitted records.
pub(crate) static KAFKA_RESERVED_PROPERTIES: [Reserved; 9] = [
    Reserved {
        name: "group.id",
        reason: "it reads with a group id of its own and never joins the measured group; name \
                 that group in the probe's `group`",
    },
    Reserved {
        name: "enable.auto.commit",
        reason: "its reader never commits offsets",
    },
    Reserved {
        name: "auto.commit.enable",
        reason: "its reader never commits offsets",
    },
    Reserved {
        name: "enable.auto.offset.store",
        reason: "its reader never stores offsets",
    },
    Reserved {
        name: "isolation.level",
        reason: "it always reads with read_committed",
    },
    Reserved {
        name: "bootstrap.servers",
        reason: "list the brokers in `brokers`",
    },
    Reserved {
        name: "metadata.broker.list",
        reason: "list the brokers in `brokers`",
    },
    Reserved {
        name: "auto.offset.reset",
        reason: "its reader only reads from explicit offsets; for partitions without a \
                 committed offset, set the probe's `no_commit`",
    },
    Reserved {
        name: "enable.partition.eof",
        reason: "its reader decides how the end of a partition is reported",
    },
];

pub(crate) static KAFKA: Table = Table {
    id: "kafka",
    doc: "A Kafka cluster, reached through its bootstrap brokers with librdkafka. One client is \
          shared by every probe of the source.",
    keys: &[
        required(
            "brokers",
            NON_EMPTY_TEXT,
            "Bootstrap brokers: host:port entries separated by commas, such as \
             kafka-1:9092,kafka-2:9092.",
        ),
        key(
            "properties",
            Type::StringMap {
                reserved: &KAFKA_RESERVED_PROPERTIES,
            },
            "librdkafka properties, such as security.protocol, ssl.ca.location, \
             sasl.mechanism, sasl.username and sasl.password. Every value is treated as a \
             secret. group.id, enable.auto.commit, auto.commit.enable, \
             enable.auto.offset.store, isolation.level, bootstrap.servers, \
             metadata.broker.list, auto.offset.reset and enable.partition.eof are set by \
             lagbudget and rejected here.",
        ),
    ],
    kinds: None,
    one_of: &[],
};

pub(crate) static RABBITMQ: Table = Table {
    id: "rabbitmq",
    doc: "A RabbitMQ node, read through its management HTTP API (the rabbitmq_management \
          plugin). Needs a user tagged `monitoring` (or `management` with access to the \
          probed vhosts).",
    keys: &[
        required(
            "url",
            NON_EMPTY_TEXT,
            "Base URL of the management API, such as http://rabbit:15672 (http or https, \
             optionally with a path prefix); without credentials.",
        ),
        required("username", NON_EMPTY_TEXT, "User of the management API."),
        required(
            "password",
            TEXT,
            "Password of that user; put it in ${VAR} or ${file:/path}. Never printed.",
        ),
        defaulted(
            "max_connections",
            Type::Integer {
                min: 1,
                max: Some(64),
            },
            DefaultValue::Integer(4),
            "Requests in flight at once, shared by every probe of this source.",
        ),
    ],
    kinds: None,
    one_of: &[],
};

pub(crate) static REDIS: Table = Table {
    id: "redis",
    doc: "A Redis server (7.0 or later), reached through one multiplexed connection shared by \
          every probe of the source.",
    keys: &[required(
        "url",
        NON_EMPTY_TEXT,
        "redis://[user:password@]host[:port][/db]. Put the password in ${VAR} or ${file:/path}. \
         TLS (rediss://) is not supported yet.",
    )],
    kinds: None,
    one_of: &[],
};

pub(crate) static NATS: Table = Table {
    id: "nats",
    doc: "A NATS server with JetStream, reached through the client protocol with one client \
          shared by every probe of the source.",
    keys: &[required(
        "url",
        NON_EMPTY_TEXT,
        "nats://[user:password@]host[:port]. Put the password in ${VAR} or ${file:/path}.",
    )],
    kinds: None,
    one_of: &[],
};

pub(crate) static BUDGET: Table = Table {
    id: "budget",
    doc: "One feature's agreement on how far its derived views may trail the source.",
    keys: &[
        required(
            "name",
            Type::Name,
            "Unique name; the `budget` label of every series.",
        ),
        key("description", TEXT, "What the budget protects, for humans."),
        key("owner", TEXT, "The team that owns the budget."),
        key(
            "labels",
            Type::Labels,
            "Free-form routing labels, exported on lagbudget_budget_info.",
        ),
        key(
            "max_lag",
            POSITIVE_DURATION,
            "How far the view may trail the source. Set max_lag or max_backlog here or on \
             every probe.",
        ),
        key(
            "max_backlog",
            Type::Integer { min: 0, max: None },
            "How many items may wait; 0 means the backlog must be empty.",
        ),
        defaulted(
            "warn_at",
            Type::Percent {
                max_inclusive: true,
            },
            DefaultValue::Percent(80),
            "Share of the budget used at which the state is `warn`.",
        ),
        defaulted(
            "breach_after",
            ANY_DURATION,
            DefaultValue::Duration(Duration::ZERO),
            "How long a probe must be over budget before the state is `breach`.",
        ),
        key(
            "objective",
            Type::Table(&OBJECTIVE),
            "Share of time the budget should be met, over a window.",
        ),
        defaulted(
            "severity",
            NON_EMPTY_TEXT,
            DefaultValue::Str("page"),
            "Severity label of this budget's alerts.",
        ),
        key("runbook_url", TEXT, "Link put on this budget's alerts."),
        key(
            "interval",
            POSITIVE_DURATION,
            "How often this budget's probes run; at most max_lag / 2.",
        ),
        key(
            "timeout",
            POSITIVE_DURATION,
            "How long one run of this budget's probes may take; at most the interval.",
        ),
        key(
            "stall_after",
            POSITIVE_DURATION,
            "How long a probe may be behind without progress before it counts as stalled.",
        ),
        required(
            "probes",
            Type::TableList {
                table: &PROBE,
                non_empty: true,
            },
            "The measurements of this feature's hops and views.",
        ),
    ],
    kinds: None,
    one_of: &[],
};

pub(crate) static OBJECTIVE: Table = Table {
    id: "objective",
    doc: "Share of time the budget should be met, over a window.",
    keys: &[
        required(
            "target",
            Type::Percent {
                max_inclusive: false,
            },
            "Share of the window the budget should be met, such as 99.9%; below 100%.",
        ),
        required(
            "window",
            POSITIVE_DURATION,
            "The rolling window, such as 28d.",
        ),
    ],
    kinds: None,
    one_of: &[],
};

pub(crate) static PROBE: Table = Table {
    id: "probe",
    doc: "One measurement of one hop or view, tagged with its kind.",
    keys: &[
        required(
            "name",
            Type::Name,
            "Name, unique within its budget; the `probe` label.",
        ),
        key(
            "interval",
            POSITIVE_DURATION,
            "How often this probe runs; at most max_lag / 2.",
        ),
        key(
            "timeout",
            POSITIVE_DURATION,
            "How long one run may take; at most the interval.",
        ),
        key(
            "max_lag",
            POSITIVE_DURATION,
            "Overrides the budget's max_lag.",
        ),
        key(
            "max_backlog",
            Type::Integer { min: 0, max: None },
            "Overrides the budget's max_backlog.",
        ),
        key(
            "stall_after",
            POSITIVE_DURATION,
            "How long this probe may be behind without progress before it counts as stalled.",
        ),
    ],
    kinds: Some(&PROBE_KINDS),
    one_of: &[],
};

pub(crate) static PROBE_KINDS: Kinds = Kinds {
    what: "probe",
    variants: &[
        key(
            "sql_watermark",
            Type::Table(&SQL_WATERMARK),
            "A projection or read model whose position is read with SQL.",
        ),
        key(
            "kafka_consumer_group",
            Type::Table(&KAFKA_CONSUMER_GROUP),
            "A Kafka consumer group: lag is the age of the first record at or after each \
             partition's committed offset.",
        ),
        key(
            "postgres_logical",
            Type::Table(&POSTGRES_LOGICAL),
            "A logical replication slot: backlog in bytes, and lag from an LSN-to-time map \
             lagbudget builds from its own samples.",
        ),
        key(
            "rabbitmq_queue",
            Type::Table(&RABBITMQ_QUEUE),
            "A RabbitMQ queue: depth, consumers and the age of its head message.",
        ),
        key(
            "redis_stream_group",
            Type::Table(&REDIS_STREAM_GROUP),
            "A Redis stream consumer group: lag is the age of the oldest entry it has not \
             acknowledged or not yet been delivered.",
        ),
        key(
            "nats_consumer",
            Type::Table(&NATS_CONSUMER),
            "A NATS JetStream consumer: lag is the age of its first unacknowledged message.",
        ),
        key(
            "mysql_replica",
            Type::Table(&MYSQL_REPLICA),
            "MySQL or MariaDB replicas: lag of each replica, measured with a heartbeat the \
             daemon writes on the primary.",
        ),
        key(
            "postgres_replica",
            Type::Table(&POSTGRES_REPLICA),
            "PostgreSQL streaming standbys of a primary: lag is the age of the oldest change \
             not yet replayed on each standby.",
        ),
    ],
};

pub(crate) static RABBITMQ_QUEUE: Table = Table {
    id: "rabbitmq_queue",
    doc: "A RabbitMQ queue read through the management API: backlog is its depth (ready and \
          unacknowledged messages); lag is the age of its head message, from the message's \
          AMQP `timestamp` property (whole seconds), 0 when the queue is empty. Only classic \
          queues report a head timestamp; for other queues, or messages without timestamps, \
          use max_backlog (dead-letter queues: max_backlog: 0). The management statistics \
          behind every figure refresh every few seconds (collect_statistics_interval).",
    keys: &[
        required(
            "source",
            NON_EMPTY_TEXT,
            "Name of the rabbitmq source to read.",
        ),
        required("queue", NON_EMPTY_TEXT, "The queue's name."),
        defaulted(
            "vhost",
            NON_EMPTY_TEXT,
            DefaultValue::Str("/"),
            "The queue's virtual host.",
        ),
        defaulted(
            "timestamps",
            Type::Bool,
            DefaultValue::Bool(true),
            "Whether the queue's messages carry the AMQP timestamp property. `false`: \
             backlog only; max_lag is then rejected.",
        ),
    ],
    kinds: None,
    one_of: &[],
};

pub(crate) static SQL_WATERMARK: Table = Table {
    id: "sql_watermark",
    doc: "A projection or read model whose position is read with SQL.",
    keys: &[
        required(
            "source",
            NON_EMPTY_TEXT,
            "Name of the postgres source to query.",
        ),
        required(
            "watermark",
            NON_EMPTY_TEXT,
            "Returns one row, one column: the view's position or timestamp.",
        ),
        key(
            "oldest_pending",
            NON_EMPTY_TEXT,
            "Given the watermark as $1, returns the timestamp of the oldest change not yet \
             applied (NULL when nothing is pending) and optionally a pending count.",
        ),
        defaulted(
            "mode",
            Type::Enum(&["oldest_pending", "since_watermark"]),
            DefaultValue::Str("oldest_pending"),
            "`oldest_pending`: lag is the age of the oldest pending change. \
             `since_watermark`: lag is now - watermark, which reads an idle source as lag; \
             only without oldest_pending.",
        ),
    ],
    kinds: None,
    one_of: &[],
};

pub(crate) static KAFKA_CONSUMER_GROUP: Table = Table {
    id: "kafka_consumer_group",
    doc: "A Kafka consumer group's lag on some topics: per partition, the age of the first \
          record at or after the group's committed offset (0 when the group is caught up). \
          lagbudget reads with its own group id, never joins the group and never commits.",
    keys: &[
        required(
            "source",
            NON_EMPTY_TEXT,
            "Name of the kafka source to read.",
        ),
        required(
            "group",
            NON_EMPTY_TEXT,
            "The consumer group whose committed offsets are measured.",
        ),
        key(
            "topics",
            NON_EMPTY_STRINGS,
            "The topics the group consumes. Set exactly one of topics and topic_pattern.",
        ),
        key(
            "topic_pattern",
            NON_EMPTY_TEXT,
            "A regular expression (Rust regex syntax) matched against whole topic names, \
             such as `orders\\..*`. Set exactly one of topics and topic_pattern.",
        ),
        key(
            "no_commit",
            Type::Enum(&["earliest", "latest"]),
            "How to read a partition that has records but no committed offset: `earliest` \
             (the group will start from the beginning: every record is pending) or `latest` \
             (it will start at the end: nothing is pending). Unset: such a partition makes \
             the probe unknown.",
        ),
        defaulted(
            "partition_detail",
            Type::Bool,
            DefaultValue::Bool(false),
            "Export per-partition lag series (the most lagging partitions, capped).",
        ),
    ],
    kinds: None,
    one_of: &["topics", "topic_pattern"],
};

pub(crate) static POSTGRES_LOGICAL: Table = Table {
    id: "postgres_logical",
    doc: "A logical replication slot on a PostgreSQL primary (publications, Debezium, \
          pg_recvlogical…). Backlog is the WAL the slot's consumer has not confirmed, in \
          bytes; lag is the age of the oldest transaction committed after the slot's confirmed \
          position, read from a map of WAL positions to times that lagbudget samples itself \
          (read-only). Unknown until that map reaches back to the slot's position.",
    keys: &[
        required(
            "source",
            NON_EMPTY_TEXT,
            "Name of the postgres source (the primary the slot lives on).",
        ),
        required(
            "slot",
            NON_EMPTY_TEXT,
            "Name of the logical replication slot, as in pg_replication_slots.slot_name.",
        ),
    ],
    kinds: None,
    one_of: &[],
};

pub(crate) static REDIS_STREAM_GROUP: Table = Table {
    id: "redis_stream_group",
    doc: "A Redis stream consumer group. Lag is Redis TIME minus the milliseconds of the oldest \
          entry the group has not acknowledged (XPENDING) or not yet delivered (the first entry \
          after its last-delivered-id), read in one read-only script; backlog is pending plus \
          undelivered entries. lagbudget never reads through the group, so it delivers nothing.",
    keys: &[
        required(
            "source",
            NON_EMPTY_TEXT,
            "Name of the redis source to read.",
        ),
        required("stream", NON_EMPTY_TEXT, "The stream's key."),
        required("group", NON_EMPTY_TEXT, "The consumer group."),
        defaulted(
            "id_time",
            Type::Bool,
            DefaultValue::Bool(true),
            "Entry IDs are Redis' time-based IDs (<milliseconds>-<seq>), so an entry's age is \
             known. Set false for streams written with explicit non-time IDs: the probe then \
             reports backlog only, and needs max_backlog rather than max_lag.",
        ),
    ],
    kinds: None,
    one_of: &[],
};

pub(crate) static NATS_CONSUMER: Table = Table {
    id: "nats_consumer",
    doc: "A NATS JetStream consumer. Lag is the age of the first unacknowledged message (read by \
          sequence from ack_floor.stream_seq + 1, through the stream's get-message API); backlog \
          is num_pending plus num_ack_pending.",
    keys: &[
        required("source", NON_EMPTY_TEXT, "Name of the nats source to read."),
        required("stream", NON_EMPTY_TEXT, "The JetStream stream."),
        required(
            "consumer",
            NON_EMPTY_TEXT,
            "The durable consumer whose progress is measured.",
        ),
    ],
    kinds: None,
    one_of: &[],
};

pub(crate) static MYSQL_REPLICA: Table = Table {
    id: "mysql_replica",
    doc: "MySQL or MariaDB replicas. The daemon writes a heartbeat row (instance, probe, seq, \
          written_at) into a table of its own database on the primary every write_period and \
          reads the highest visible seq on each replica: lag is the age of the oldest \
          heartbeat not yet visible there, on the daemon's clock. Each replica is measured \
          on its own, labelled `replica` with its source name.",
    keys: &[
        required(
            "primary",
            NON_EMPTY_TEXT,
            "Name of the mysql source the heartbeat is written to.",
        ),
        required(
            "replicas",
            NON_EMPTY_STRINGS,
            "Names of the mysql sources of the replicas to measure.",
        ),
        key(
            "write_period",
            POSITIVE_DURATION,
            "How often the heartbeat is written; lag is measured to within one period. At \
             most max_lag / 2. Default: max_lag / 10, between 100ms and 1s.",
        ),
        defaulted(
            "database",
            NON_EMPTY_TEXT,
            DefaultValue::Str("lagbudget"),
            "Database (schema) of the heartbeat table on the primary; created if missing. \
             Letters, digits, `_` and `$`, at most 64 characters.",
        ),
        key(
            "instance",
            NON_EMPTY_TEXT,
            "This daemon's name in the heartbeat table, so that several daemons never share a \
             row. Default: the host name.",
        ),
        key(
            "ryw_delay",
            POSITIVE_DURATION,
            "Check read-your-writes: each run reads, on the replica, the newest heartbeat \
             whose write at the primary returned at least this long ago, and counts a miss \
             when it is not visible. At most 10m. Unset: no check.",
        ),
    ],
    kinds: None,
    one_of: &[],
};

/// The schema of the heartbeat table unless the config names another.
pub(crate) const DEFAULT_HEARTBEAT_SCHEMA: &str = "lagbudget";
/// PostgreSQL's own `wal_receiver_timeout` default: the receiver gives up after this long.
pub(crate) const DEFAULT_RECEIVER_SILENCE_LIMIT: Duration = Duration::from_secs(60);

pub(crate) static POSTGRES_REPLICA: Table = Table {
    id: "postgres_replica",
    doc: "PostgreSQL streaming standbys of a primary. Each standby is measured on its own, \
          labelled `replica` with its source name. Every run checks that the standby is in \
          recovery, belongs to the primary's system and is on its timeline (else \
          reason=topology).",
    keys: &[
        required(
            "primary",
            NON_EMPTY_TEXT,
            "Name of the postgres source of the primary.",
        ),
        required(
            "standbys",
            NON_EMPTY_STRINGS,
            "Names of the postgres sources of the standbys; each is the `replica` label of its \
             series.",
        ),
        required(
            "method",
            Type::Enum(&["heartbeat", "passive"]),
            "`heartbeat`: lagbudget writes a row per write period into a table of its own on \
             the primary and reads it on each standby (needs write access). `passive`: \
             read-only; WAL positions sampled with the daemon's time.",
        ),
        key(
            "write_period",
            POSITIVE_DURATION,
            "How often the heartbeat is written (heartbeat only); at most max_lag / 2. Default: \
             max_lag / 10, between 100ms and 1s.",
        ),
        defaulted(
            "schema",
            NON_EMPTY_TEXT,
            DefaultValue::Str(DEFAULT_HEARTBEAT_SCHEMA),
            "Schema of the heartbeat table on the primary, created if missing (heartbeat only).",
        ),
        key(
            "instance",
            NON_EMPTY_TEXT,
            "This daemon's name in the heartbeat rows, so that several daemons can write to \
             one primary (heartbeat only). Default: the host name.",
        ),
        key(
            "ryw_delay",
            POSITIVE_DURATION,
            "Read-your-writes check (heartbeat only): each run checks that the newest \
             heartbeat written at least this long before the read is visible on the standby.",
        ),
        defaulted(
            "receiver_silence_limit",
            POSITIVE_DURATION,
            DefaultValue::Duration(DEFAULT_RECEIVER_SILENCE_LIMIT),
            "A WAL receiver that has not heard from the primary for longer is down (passive \
             only). An idle primary sends a keepalive at least every wal_sender_timeout / 2.",
        ),
    ],
    kinds: None,
    one_of: &[],
};

impl Table {
    /// The key or variant called `name`.
    pub fn key(&self, name: &str) -> Option<&'static Key> {
        let variants: &'static [Key] = self.kinds.map_or(&[], |kinds| kinds.variants);
        self.keys
            .iter()
            .chain(variants)
            .find(|key| key.name == name)
    }
}
