//! The `dynamodb` source against moto (tests/it/moto_support.rs): `check --connect` answers,
//! requests are signed for the source's region (moto keeps tables per region), both APIs are
//! reached, a closed port and missing keys are `connect` errors, and keys never appear in any
//! output. Each test starts its own moto.

use std::process::{Command, Output};
use std::time::Duration;

use lagbudget::probe::dynamodb::Api;
use serde_json::json;

use crate::moto_support::Moto;
use crate::support::{closed_port, load_config};

const KEY_ID: &str = "AKIDQ7ZR2LBSECRET";
const SECRET_KEY: &str = "ddb-secret-Wd9Lm4-key";
const TOKEN: &str = "ddb-token-Xv3Np8-secret";

fn source_yaml(region: &str, endpoint: &str, keys: &str) -> String {
    format!(
        "sources:\n  store:\n    dynamodb: {{ region: {region}, endpoint: \"{endpoint}\"{keys} }}\n"
    )
}

const EXPLICIT_KEYS: &str = ", access_key_id: \"${LB_DDB_KEY_ID}\", secret_access_key: \"${LB_DDB_SECRET}\", session_token: \"${LB_DDB_TOKEN}\"";

/// `lagbudget check --connect` on `yaml` at trace level (every library's logs included), with
/// only the given AWS variables in its environment and HOME in an empty directory.
fn check_connect(yaml: &str, env: &[(&str, &str)]) -> (Output, String) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("lagbudget.yaml");
    std::fs::write(&path, yaml).expect("config");
    let mut command = Command::new(env!("CARGO_BIN_EXE_lagbudget"));
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    command
        .env("HOME", dir.path())
        .env("LB_DDB_KEY_ID", KEY_ID)
        .env("LB_DDB_SECRET", SECRET_KEY)
        .env("LB_DDB_TOKEN", TOKEN)
        .envs(env.iter().copied())
        .args([
            "--log.level",
            "trace,reqwest=trace,hyper=trace,hyper_util=trace,aws_sigv4=trace",
            "check",
            "--connect",
            "--timeout",
            "10s",
            "-c",
        ])
        .arg(&path);
    let out = command.output().expect("run lagbudget check --connect");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    (out, text)
}

fn assert_no_keys(text: &str) {
    for secret in [KEY_ID, SECRET_KEY, TOKEN, "AKIDENVSECRET", "env-secret-key"] {
        assert!(!text.contains(secret), "{secret} appears in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn check_connect_reaches_both_apis_signed_for_the_region() {
    let moto = Moto::start().await;
    // Tables made through the client itself, in one region: moto reads the region from the
    // signature, so another region sees none.
    let config = load_config(&source_yaml(
        "eu-west-1",
        &moto.endpoint(),
        ", access_key_id: testing, secret_access_key: testing",
    ));
    let handles = lagbudget::probe::SourceHandles::build(&config, None).expect("handles");
    let client = handles.dynamodb("store").expect("a dynamodb source");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let created = client
        .call(
            Api::Dynamodb,
            "CreateTable",
            &json!({
                "TableName": "orders",
                "AttributeDefinitions": [{ "AttributeName": "id", "AttributeType": "S" }],
                "KeySchema": [{ "AttributeName": "id", "KeyType": "HASH" }],
                "BillingMode": "PAY_PER_REQUEST",
                "StreamSpecification": { "StreamEnabled": true, "StreamViewType": "NEW_IMAGE" },
            }),
            deadline,
        )
        .await
        .expect("CreateTable");
    assert!(
        created["TableDescription"]["LatestStreamArn"].is_string(),
        "{created}"
    );
    let streams = client
        .call(
            Api::Streams,
            "ListStreams",
            &json!({ "TableName": "orders" }),
            deadline,
        )
        .await
        .expect("ListStreams");
    assert_eq!(
        streams["Streams"].as_array().map(Vec::len),
        Some(1),
        "{streams}"
    );
    let missing = client
        .call(
            Api::Dynamodb,
            "DescribeTable",
            &json!({ "TableName": "nope" }),
            deadline,
        )
        .await
        .expect_err("no such table");
    assert_eq!(missing.reason.as_str(), "query");
    assert!(
        missing.message.contains("ResourceNotFoundException"),
        "{}",
        missing.message
    );

    let (out, text) = check_connect(
        &source_yaml("eu-west-1", &moto.endpoint(), EXPLICIT_KEYS),
        &[],
    );
    assert!(out.status.success(), "check --connect passes");
    assert!(
        text.lines().any(|line| line.starts_with("ok ")
            && line.ends_with("source store (dynamodb): DynamoDB answers in eu-west-1, 1 tables")),
        "{text}"
    );
    assert_no_keys(&text);
    // Keys from the environment, another region: no tables there.
    let (out, text) = check_connect(
        &source_yaml("us-east-1", &moto.endpoint(), ""),
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDENVSECRET"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret-key"),
        ],
    );
    assert!(out.status.success(), "check --connect passes");
    assert!(
        text.contains("DynamoDB answers in us-east-1, 0 tables"),
        "{text}"
    );
    assert_no_keys(&text);
}

#[test]
fn a_closed_port_is_a_connect_error_without_the_keys() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let (out, text) = check_connect(&source_yaml("eu-west-1", &endpoint, EXPLICIT_KEYS), &[]);
    assert!(!out.status.success(), "check --connect fails");
    let line = text
        .lines()
        .find(|line| line.contains("source store (dynamodb)"))
        .unwrap_or_else(|| panic!("no line for the source in:\n{text}"));
    assert!(line.contains("connect"), "{line}");
    assert!(line.to_ascii_lowercase().contains("refused"), "{line}");
    assert_no_keys(&text);
}

#[test]
fn without_keys_the_connect_error_names_what_was_tried() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let (out, text) = check_connect(
        &source_yaml("eu-west-1", &endpoint, ""),
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDENVSECRET"),
            ("AWS_PROFILE", "ci"),
        ],
    );
    assert!(!out.status.success(), "check --connect fails");
    let line = text
        .lines()
        .find(|line| line.contains("source store (dynamodb)"))
        .unwrap_or_else(|| panic!("no line for the source in:\n{text}"));
    for tried in [
        "connect",
        "no AWS credentials found",
        "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not",
        ".aws/credentials",
        "not supported yet",
    ] {
        assert!(line.contains(tried), "{tried:?} not in {line}");
    }
    assert_no_keys(&text);
}

#[test]
fn a_source_without_a_region_is_a_config_error() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("lagbudget.yaml");
    std::fs::write(
        &path,
        "sources:\n  store:\n    dynamodb: { endpoint: \"http://127.0.0.1:5000\", access_key_id: \"${LB_DDB_KEY_ID}\", secret_access_key: x }\n",
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_lagbudget"))
        .env("LB_DDB_KEY_ID", KEY_ID)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run lagbudget check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("sources.store.dynamodb: missing required key `region`"),
        "{text}"
    );
    assert_no_keys(&text);
}
