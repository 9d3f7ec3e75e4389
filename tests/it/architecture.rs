//! The invariants ARCHITECTURE.md states as absences, kept by reading the source: a `use` that
//! breaks one fails here, naming the file, the line and the rule.

use std::fs;
use std::path::{Path, PathBuf};

/// One non-test line of a source file.
struct Line {
    file: String,
    number: usize,
    text: String,
}

/// Where the reader stands with respect to `#[cfg(test)]` code.
#[derive(Clone, Copy)]
enum TestItem {
    None,
    /// The line after the attribute: the item it applies to.
    Starts,
    /// Inside a test module or function, until its closing brace.
    Block,
}

/// Every line of `src/` outside `#[cfg(test)]` modules, with comments removed. A `use` that
/// rustfmt spread over several lines is one line here, numbered by its first, so that the names
/// inside its braces are checked too.
fn source_lines() -> Vec<Line> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    let mut lines = Vec::new();
    for path in files {
        let text = fs::read_to_string(&path).expect("source file is readable");
        let name = path
            .strip_prefix(&root)
            .expect("under src")
            .display()
            .to_string();
        let mut open_use: Option<Line> = None;
        let mut test_item = TestItem::None;
        for (index, line) in text.lines().enumerate() {
            // Test code may read the clock or build any kind, as tests must: a `#[cfg(test)]`
            // item is skipped up to its closing brace at the start of a line. Code after a test
            // module is still read.
            if line.starts_with("#[cfg(test)]") {
                test_item = TestItem::Starts;
                continue;
            }
            match test_item {
                // A one-line item (`use …;`) ends where it starts; a block at its closing brace.
                TestItem::Starts if line.ends_with(';') => {
                    test_item = TestItem::None;
                    continue;
                }
                TestItem::Starts | TestItem::Block => {
                    test_item = if line == "}" {
                        TestItem::None
                    } else {
                        TestItem::Block
                    };
                    continue;
                }
                TestItem::None => {}
            }
            let code = line.split("//").next().unwrap_or("").to_owned();
            if let Some(mut statement) = open_use.take() {
                statement.text.push(' ');
                statement.text.push_str(code.trim());
                if code.contains(';') {
                    lines.push(statement);
                } else {
                    open_use = Some(statement);
                }
                continue;
            }
            let line = Line {
                file: name.clone(),
                number: index + 1,
                text: code,
            };
            let trimmed = line.text.trim_start();
            let starts_use = ["use ", "pub use ", "pub(crate) use "]
                .iter()
                .any(|start| trimmed.starts_with(start));
            if starts_use && !line.text.contains(';') {
                open_use = Some(line);
            } else {
                lines.push(line);
            }
        }
        lines.extend(open_use);
    }
    lines
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The crate items a line names: `crate::a::b` gives `a::b`, `crate::{a, b::c}` gives `a` and
/// `b::c`, and `crate::a::{b, c::{d, e}}` gives `a::b`, `a::c::d` and `a::c::e`.
fn crate_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let used = expand("", rest, &mut out);
        rest = &rest[used..];
    }
    out
}

/// Reads one path (with its brace groups) at the start of `text`, adds every full path it names
/// to `out` with `prefix` before it, and returns how many bytes it read.
fn expand(prefix: &str, text: &str, out: &mut Vec<String>) -> usize {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    let head = format!("{prefix}{}", &text[..end]);
    let Some(group) = text[end..].strip_prefix('{') else {
        out.push(head.trim_end_matches(':').to_owned());
        return end;
    };
    let mut read = end + 1;
    let mut item = group;
    loop {
        let item_start = item.len() - item.trim_start_matches([' ', ',']).len();
        item = &item[item_start..];
        read += item_start;
        if item.is_empty() {
            return read;
        }
        if item.starts_with('}') {
            return read + 1;
        }
        let used = expand(&head, item, out).max(1);
        item = &item[used..];
        read += used;
    }
}

/// The probe kinds: every file under `src/probe/` that is not the shared machinery.
fn probe_kinds() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/probe");
    let shared = ["mod", "pool", "heartbeat"];
    let mut kinds: Vec<String> = fs::read_dir(dir)
        .expect("src/probe is readable")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let stem = path.file_stem()?.to_str()?.to_owned();
            (path.extension().is_some_and(|e| e == "rs") && !shared.contains(&stem.as_str()))
                .then_some(stem)
        })
        .collect();
    kinds.sort();
    kinds
}

fn violations(
    lines: &[Line],
    applies: impl Fn(&str) -> bool,
    bad: impl Fn(&str) -> bool,
) -> Vec<String> {
    lines
        .iter()
        .filter(|line| applies(&line.file) && bad(&line.text))
        .map(|line| format!("src/{}:{}: {}", line.file, line.number, line.text.trim()))
        .collect()
}

fn assert_none(rule: &str, found: Vec<String>) {
    assert!(found.is_empty(), "{rule}, but:\n{}", found.join("\n"));
}

fn names_a_kind(text: &str, kinds: &[String]) -> bool {
    crate_paths(text).iter().any(|path| {
        let mut parts = path.split("::");
        parts.next() == Some("probe")
            && parts
                .next()
                .is_some_and(|second| kinds.iter().any(|kind| kind == second))
    })
}

#[test]
fn shared_layers_never_import_a_probe_kind() {
    assert_eq!(
        crate_paths("use crate::probe::{Detail, kafka_consumer_group::detail::{A, B}};"),
        [
            "probe::Detail",
            "probe::kafka_consumer_group::detail::A",
            "probe::kafka_consumer_group::detail::B"
        ],
        "the path reader expands groups"
    );
    let kinds = probe_kinds();
    assert!(
        kinds.contains(&"nats_consumer".to_owned()),
        "kinds found: {kinds:?}"
    );
    let shared_layers = |file: &str| {
        [
            "evaluate.rs",
            "state.rs",
            "metrics.rs",
            "status.rs",
            "server.rs",
            "shared.rs",
            "history.rs",
        ]
        .contains(&file)
            || file.starts_with("generate/")
            || file.starts_with("page/")
    };
    assert_none(
        "evaluate, state, history, metrics, status, server, page and generate never import a probe kind",
        violations(&source_lines(), shared_layers, |text| {
            names_a_kind(text, &kinds)
        }),
    );
}

#[test]
fn only_the_clock_reads_the_time() {
    // `demo.rs` plays the measured system (a producer and consumers with their own pace); it
    // is a user of the library, not a part of the daemon.
    let reads_time = |text: &str| {
        [
            "SystemTime::now",
            "Instant::now",
            ".elapsed()",
            "Utc::now",
            "Local::now",
        ]
        .iter()
        .any(|call| text.contains(call))
    };
    assert_none(
        "only clock.rs reads the time",
        violations(
            &source_lines(),
            |file| file != "clock.rs" && file != "demo.rs",
            reads_time,
        ),
    );
}

#[test]
fn the_ground_floor_has_no_upward_imports() {
    let lines = source_lines();
    // Leaves: what a run yields, the clock and secrets import nothing of the crate above them.
    assert_none(
        "clock.rs and secret.rs import nothing of the crate, sample.rs only secret",
        violations(
            &lines,
            |file| ["clock.rs", "secret.rs", "sample.rs"].contains(&file),
            |text| {
                crate_paths(text)
                    .iter()
                    .any(|path| !path.starts_with("secret"))
            },
        ),
    );
    // Families are written by one leaf that `metrics.rs` and the kinds' details share.
    assert_none(
        "families.rs imports nothing of the crate",
        violations(
            &lines,
            |file| file == "families.rs",
            |text| !crate_paths(text).is_empty(),
        ),
    );
    assert_none(
        "evaluate.rs knows nothing of probes: it reads samples and errors from sample.rs",
        violations(
            &lines,
            |file| file == "evaluate.rs",
            |text| {
                crate_paths(text)
                    .iter()
                    .any(|path| path.starts_with("probe"))
            },
        ),
    );
    // The state keeps what runs yield, a kind's detail among it: it may name the registry's
    // plain data, never a handle, a runner or a kind.
    let registry_data = ["probe::Detail", "probe::ProbeError", "probe::Reading"];
    assert_none(
        "state.rs names only the probe registry's plain data (Detail, ProbeError, Reading)",
        violations(
            &lines,
            |file| file == "state.rs",
            |text| {
                crate_paths(text).iter().any(|path| {
                    (path == "probe" || path.starts_with("probe::"))
                        && !registry_data.contains(&path.as_str())
                })
            },
        ),
    );
    // Pure evaluation and the state take `now` from their callers and do no IO.
    assert_none(
        "evaluate.rs and state.rs read no clock, talk to no system and know no orchestrator",
        violations(
            &lines,
            |file| file == "evaluate.rs" || file == "state.rs",
            |text| {
                text.contains("tokio")
                    || text.contains("std::net")
                    || text.contains("std::fs")
                    || crate_paths(text).iter().any(|path| {
                        [
                            "clock::now",
                            "clock::unix_now",
                            "daemon",
                            "schedule",
                            "server",
                        ]
                        .iter()
                        .any(|banned| path.starts_with(banned))
                    })
            },
        ),
    );
    // Outputs read the state; the orchestrator sits above them, never below.
    assert_none(
        "metrics, status, server and shared never import daemon or schedule",
        violations(
            &lines,
            |file| ["metrics.rs", "status.rs", "server.rs", "shared.rs"].contains(&file),
            |text| {
                crate_paths(text)
                    .iter()
                    .any(|path| path.starts_with("daemon") || path.starts_with("schedule"))
            },
        ),
    );
    // Probe kinds measure; they never reach into scheduling, state or outputs. Their
    // submodules (`probe/<kind>/detail.rs`…) are part of the kind.
    let kinds = probe_kinds();
    assert_none(
        "probe kinds never import schedule, state, daemon, server or metrics rendering",
        violations(
            &lines,
            |file| {
                file.strip_prefix("probe/")
                    .and_then(|f| f.split(['/', '.']).next())
                    .is_some_and(|stem| kinds.iter().any(|kind| kind == stem))
            },
            |text| {
                crate_paths(text).iter().any(|path| {
                    [
                        "schedule", "state", "daemon", "server", "shared", "evaluate",
                    ]
                    .iter()
                    .any(|banned| path.starts_with(banned))
                })
            },
        ),
    );
}

#[test]
fn only_config_and_the_rule_writer_know_yaml() {
    assert_none(
        "only config/ reads YAML (and generate/rules.rs writes it)",
        violations(
            &source_lines(),
            |file| !file.starts_with("config/") && file != "generate/rules.rs",
            |text| text.contains("yaml_rust2"),
        ),
    );
}
