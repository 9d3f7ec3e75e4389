//! The integration suite: one binary, one module per area, against real services
//! (the machine's PostgreSQL on 127.0.0.1:5432, and private PostgreSQL and MariaDB servers and
//! moto, for DynamoDB, that it starts).

mod architecture;
mod browser;
mod cache;
mod canary;
mod canary_dynamodb;
mod canary_e2e;
mod canary_http;
mod canary_queues;
mod canary_redis;
mod chromium;
mod config_errors;
mod daemon;
mod dashboards;
mod demo;
mod docs;
mod dynamodb;
mod dynamodb_stream;
mod example_updating;
mod http;
mod kafka;
mod logical;
mod mariadb_support;
mod mongodb;
mod mongodb_support;
mod moto_support;
mod mysql;
mod nats;
mod oldest_pending;
mod openapi;
mod paging;
mod rabbitmq;
mod reconcile;
mod reconcile_edges;
mod redis_stream;
mod replica;
mod rules;
mod status_page;
mod support;
mod watermark;
