//! A private moto server (a DynamoDB and DynamoDB Streams look-alike) for `dynamodb` tests: one
//! process per test on a free port, started from the project's venv (`scripts/test` installs
//! `moto[server]` into `.venv`), waited for (bounded) and killed on drop, even when a test
//! fails. moto keeps its tables per region (read from the request's signature), does not check
//! signatures, but wants an Authorization header.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use lagbudget::probe::dynamodb::{Api, DynamoClient};
use serde_json::Value;

use crate::support::{closed_port, load_config, poll_until};

/// How long moto may take to answer after it was started (it imports a lot of Python).
const STARTUP: Duration = Duration::from_secs(60);

pub struct Moto {
    pub port: u16,
    child: Child,
    _log: tempfile::NamedTempFile,
}

impl Moto {
    pub async fn start() -> Moto {
        let server = moto_server();
        let port = closed_port();
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log"))
            .stderr(log.reopen().expect("log"))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} could not start: {e}; run scripts/test, which installs moto[server] \
                     into .venv",
                    server.display()
                )
            });
        let mut moto = Moto {
            port,
            child,
            _log: log,
        };
        let url = format!("{}/moto-api/", moto.endpoint());
        let http = reqwest::Client::new();
        let answered = poll_until(STARTUP, || async {
            http.get(&url).send().await.ok().map(|_| ())
        })
        .await;
        if answered.is_none() || moto.child.try_wait().ok().flatten().is_some() {
            let log = std::fs::read_to_string(moto._log.path()).unwrap_or_default();
            panic!("moto did not answer on port {port} within {STARTUP:?}; its log:\n{log}");
        }
        moto
    }

    /// The `endpoint` of a `dynamodb` source that reads this server.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `sources:` entry of a `dynamodb` source `name` that reads this server as `region`.
    pub fn source_yaml(&self, name: &str, region: &str) -> String {
        format!(
            "  {name}: {{ dynamodb: {{ region: {region}, endpoint: \"{}\", access_key_id: testing, secret_access_key: testing }} }}\n",
            self.endpoint()
        )
    }

    /// The crate's own client of this server, signed for `region`: what a test sets tables,
    /// items and leases up with.
    pub fn client(&self, region: &str) -> Arc<DynamoClient> {
        let config = load_config(&format!("sources:\n{}", self.source_yaml("aws", region)));
        lagbudget::probe::SourceHandles::build(&config, None)
            .expect("handles")
            .dynamodb("aws")
            .expect("a dynamodb source")
    }
}

/// Creates `table` keyed by the string attribute `key`, with a NEW_IMAGE stream when `stream`.
pub async fn create_table(client: &DynamoClient, table: &str, key: &str, stream: bool) {
    let mut body = serde_json::json!({
        "TableName": table,
        "AttributeDefinitions": [{ "AttributeName": key, "AttributeType": "S" }],
        "KeySchema": [{ "AttributeName": key, "KeyType": "HASH" }],
        "BillingMode": "PAY_PER_REQUEST",
    });
    if stream {
        body["StreamSpecification"] =
            serde_json::json!({ "StreamEnabled": true, "StreamViewType": "NEW_IMAGE" });
    }
    aws(client, Api::Dynamodb, "CreateTable", body).await;
}

/// One request of a test's own, which must succeed.
pub async fn aws(client: &DynamoClient, api: Api, operation: &str, body: Value) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    client
        .call(api, operation, &body, deadline)
        .await
        .unwrap_or_else(|e| panic!("{operation} {body}: {e:?}"))
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// LAGBUDGET_MOTO_SERVER, else `.venv/bin/moto_server` of this package.
fn moto_server() -> PathBuf {
    if let Some(path) = std::env::var_os("LAGBUDGET_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
    assert!(
        path.exists(),
        "{} is missing: run scripts/test, which installs moto[server] into .venv (or set \
         LAGBUDGET_MOTO_SERVER)",
        path.display()
    );
    path
}
