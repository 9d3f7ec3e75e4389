//! The generated alert rules and the example Prometheus and Alertmanager configs: the committed
//! `alerts/lagbudget.rules.yaml` is what `lagbudget rules` generates, Prometheus' own tools
//! accept every file, and the promtool unit tests under `alerts/tests/` pass and cover every
//! alert, firing and not firing.
//!
//! promtool and amtool are the Debian packages `prometheus` and `prometheus-alertmanager`, which
//! `scripts/test` installs when run as root; a missing tool fails these tests with a message.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lagbudget::generate::rules::{ALERT_NAMES, RULES_FILE, RulesFormat, RulesOptions, render};
use yaml_rust2::YamlLoader;

const PROMTOOL: &str = "/usr/bin/promtool";
const AMTOOL: &str = "/usr/bin/amtool";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn committed_rules_path() -> PathBuf {
    repo("alerts").join(RULES_FILE)
}

/// Runs a Prometheus tool, failing with how to install it when it is missing.
fn tool(program: &str, package: &str, args: &[&str], cwd: &Path) -> Output {
    assert!(
        Path::new(program).is_file(),
        "{program} is missing: these tests need the Debian package `{package}` \
         (scripts/test installs it when run as root: apt-get install {package})"
    );
    Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn lagbudget(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lagbudget"))
        .args(args)
        .output()
        .expect("run lagbudget")
}

#[test]
fn committed_rules_are_what_lagbudget_rules_generates() {
    let path = committed_rules_path();
    let generated = render(&RulesOptions::default(), RulesFormat::Prometheus);
    if std::env::var("LAGBUDGET_REGENERATE").as_deref() == Ok("1") {
        std::fs::write(&path, &generated).expect("write alerts/lagbudget.rules.yaml");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "alerts/{RULES_FILE} is out of date with src/generate/rules.rs (or src/metrics.rs); \
         regenerate it with:\n    cargo run -- rules -o alerts\nthen run \
         `promtool test rules alerts/tests/*.yaml` and update the tests if an alert changed"
    );
}

/// The CLI's defaults are `RulesOptions::default()`, and `-o` writes the file of each format.
#[test]
fn cli_prints_and_writes_the_rules() {
    let printed = lagbudget(&["rules"]);
    assert_success("lagbudget rules", &printed);
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout),
        render(&RulesOptions::default(), RulesFormat::Prometheus),
        "`lagbudget rules` without options must print what RulesOptions::default() renders"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("nested");
    let out_str = out.to_str().expect("utf-8 path");
    let written = lagbudget(&["rules", "-o", out_str, "--format", "prometheusrule"]);
    assert_success("lagbudget rules --format prometheusrule -o DIR", &written);
    let text = std::fs::read_to_string(out.join("lagbudget.prometheusrule.yaml"))
        .expect("the PrometheusRule file is written");
    assert_eq!(
        text,
        render(&RulesOptions::default(), RulesFormat::Prometheusrule)
    );

    let options = lagbudget(&[
        "rules",
        "-o",
        out_str,
        "--job-selector",
        r#"job="lb",env="prod""#,
        "--exceeded-for",
        "30s",
        "--keep-firing-for",
        "1h",
    ]);
    assert_success("lagbudget rules with options", &options);
    let text = std::fs::read_to_string(out.join(RULES_FILE)).expect("rules written");
    assert!(text.contains(r#"lagbudget_state{job="lb",env="prod",state="breach"}"#));
    assert!(text.contains("for: 30s") && text.contains("keep_firing_for: 1h"));
}

/// `-c` only proves that the config loads: a broken one exits 2 with its errors, a good one
/// changes nothing in the output.
#[test]
fn cli_rules_checks_a_given_config_and_rejects_bad_options() {
    let good = repo("tests/fixtures/config/good/minimal.yaml");
    let with_config = lagbudget(&["rules", "-c", good.to_str().expect("utf-8")]);
    assert_success("lagbudget rules -c minimal.yaml", &with_config);
    assert_eq!(
        String::from_utf8_lossy(&with_config.stdout),
        render(&RulesOptions::default(), RulesFormat::Prometheus)
    );

    let bad = repo("tests/fixtures/config/bad/unknown_key.yaml");
    let rejected = lagbudget(&["rules", "-c", bad.to_str().expect("utf-8")]);
    assert_eq!(rejected.status.code(), Some(2), "{rejected:?}");
    assert!(rejected.stdout.is_empty());
    assert!(String::from_utf8_lossy(&rejected.stderr).contains("unknown_key.yaml"));

    let braces = lagbudget(&["rules", "--job-selector", r#"{job="x"}"#]);
    assert_eq!(braces.status.code(), Some(2), "{braces:?}");
    assert!(String::from_utf8_lossy(&braces.stderr).contains("--job-selector"));

    let duration = lagbudget(&["rules", "--unknown-for", "2 minutes"]);
    assert_eq!(duration.status.code(), Some(2), "{duration:?}");

    let runbooks = lagbudget(&["rules", "--runbook-url-base", "http://wiki/{x}"]);
    assert_eq!(runbooks.status.code(), Some(2), "{runbooks:?}");
    assert!(String::from_utf8_lossy(&runbooks.stderr).contains("--runbook-url-base"));
}

/// `--runbook-url-base` is where an alert links when its budget names no runbook: the
/// daemon's own `/runbooks/{AlertName}` by default, or the given base; a budget's own
/// `runbook_url` label still wins (the promtool cases under alerts/tests/ check both at
/// evaluation time).
#[test]
fn runbook_urls_default_to_the_daemons_runbooks_and_follow_the_base() {
    let default = lagbudget(&["rules"]);
    assert_success("lagbudget rules", &default);
    let elsewhere = lagbudget(&[
        "rules",
        "--runbook-url-base",
        "https://wiki.example.com/rb/",
    ]);
    assert_success("lagbudget rules --runbook-url-base", &elsewhere);
    for (output, base) in [
        (&default, "http://lagbudget:9464/runbooks"),
        (&elsewhere, "https://wiki.example.com/rb"),
    ] {
        let doc = &YamlLoader::load_from_str(&String::from_utf8_lossy(&output.stdout))
            .expect("rules are YAML")[0];
        let mut alerts = 0;
        for rule in doc["groups"]
            .as_vec()
            .expect("groups")
            .iter()
            .flat_map(|g| g["rules"].as_vec().expect("rules"))
        {
            let Some(alert) = rule["alert"].as_str() else {
                continue;
            };
            let runbook = rule["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or_else(|| panic!("{alert} has a runbook_url"));
            let own = format!("{base}/{alert}");
            if alert == "LagbudgetDown" || alert == "LagbudgetConfigReloadFailed" {
                assert_eq!(runbook, own, "{alert}");
            } else {
                assert_eq!(
                    runbook,
                    format!(
                        "{{{{ if $labels.runbook_url }}}}{{{{ $labels.runbook_url }}}}\
                         {{{{ else }}}}{own}{{{{ end }}}}"
                    ),
                    "{alert}"
                );
            }
            alerts += 1;
        }
        assert_eq!(
            alerts,
            ALERT_NAMES.len() + 1,
            "every alert (burn rate twice)"
        );
    }
}

fn test_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("alerts/tests"))
        .expect("alerts/tests exists")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let root = repo("");
    let check = tool(
        PROMTOOL,
        "prometheus",
        &["check", "rules", "alerts/lagbudget.rules.yaml"],
        &root,
    );
    assert_success("promtool check rules alerts/lagbudget.rules.yaml", &check);

    let files = test_files();
    assert!(!files.is_empty(), "alerts/tests/ has no promtool tests");
    let mut args = vec!["test".to_owned(), "rules".to_owned()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let tests = tool(PROMTOOL, "prometheus", &args, &root);
    assert_success("promtool test rules alerts/tests/*.yaml", &tests);

    // Rules generated with other options are valid too (the end-to-end test uses some).
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(RULES_FILE);
    let options = RulesOptions {
        job_selector: r#"job=~"lagbudget|lagbudget-canary", env!="dev""#.to_owned(),
        dashboard_url_base: "https://grafana.example.com/".to_owned(),
        exceeded_for: std::time::Duration::from_secs(5),
        keep_firing_for: std::time::Duration::from_millis(30_500),
        at_risk_for: std::time::Duration::ZERO,
        ..RulesOptions::default()
    };
    std::fs::write(&path, render(&options, RulesFormat::Prometheus)).expect("write rules");
    let other = tool(
        PROMTOOL,
        "prometheus",
        &["check", "rules", path.to_str().expect("utf-8")],
        &root,
    );
    assert_success("promtool check rules (non-default options)", &other);
}

/// Every alert has a promtool case where it fires and one where it does not.
#[test]
fn promtool_tests_cover_every_alert_firing_and_not_firing() {
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for file in test_files() {
        let text = std::fs::read_to_string(&file).expect("read test file");
        let docs = YamlLoader::load_from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not YAML: {e}", file.display()));
        for test in docs[0]["tests"].as_vec().expect("tests") {
            for case in test["alert_rule_test"].as_vec().into_iter().flatten() {
                let name = case["alertname"].as_str().expect("alertname").to_owned();
                let expected = case["exp_alerts"].as_vec().map_or(0, Vec::len);
                if expected > 0 {
                    firing.insert(name);
                } else {
                    quiet.insert(name);
                }
            }
        }
    }
    for alert in ALERT_NAMES {
        assert!(
            firing.contains(alert),
            "no promtool test in alerts/tests/ expects {alert} to fire"
        );
        assert!(
            quiet.contains(alert),
            "no promtool test in alerts/tests/ expects {alert} not to fire"
        );
    }
}

#[test]
fn example_prometheus_and_alertmanager_configs_are_valid() {
    let root = repo("");
    let prometheus = tool(
        PROMTOOL,
        "prometheus",
        &["check", "config", "deploy/prometheus/prometheus.yml"],
        &root,
    );
    assert_success(
        "promtool check config deploy/prometheus/prometheus.yml",
        &prometheus,
    );
    // The example config loads the committed rules, and promtool checked them as well.
    assert!(
        String::from_utf8_lossy(&prometheus.stdout).contains("lagbudget.rules.yaml"),
        "deploy/prometheus/prometheus.yml should load alerts/lagbudget.rules.yaml:\n{}",
        String::from_utf8_lossy(&prometheus.stdout)
    );

    let config = "deploy/alertmanager/alertmanager.yml";
    let alertmanager = tool(
        AMTOOL,
        "prometheus-alertmanager",
        &["check-config", config],
        &root,
    );
    assert_success("amtool check-config", &alertmanager);
    assert!(String::from_utf8_lossy(&alertmanager.stdout).contains("2 inhibit rules"));

    // Pages go to the pager, warnings and any other severity to chat.
    for (labels, receiver) in [
        (
            &["alertname=ConsistencyBudgetExceeded", "severity=page"][..],
            "pager",
        ),
        (&["alertname=LagbudgetDown", "severity=page"][..], "pager"),
        (
            &["alertname=ConsistencyBudgetAtRisk", "severity=warning"][..],
            "chat",
        ),
        (
            &["alertname=ConsistencyLagUnknown", "severity=ticket"][..],
            "chat",
        ),
    ] {
        let verify = format!("--verify.receivers={receiver}");
        let mut args = vec![
            "config",
            "routes",
            "test",
            "--config.file",
            config,
            verify.as_str(),
        ];
        args.extend_from_slice(labels);
        let routed = tool(AMTOOL, "prometheus-alertmanager", &args, &root);
        assert_success(&format!("{labels:?} routed to {receiver}"), &routed);
    }
}
