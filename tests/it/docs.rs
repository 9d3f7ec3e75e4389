//! The documentation: every relative link and `#anchor` of the Markdown files resolves, the
//! README stays short, the book (docs/, mdBook) lists every page and builds, and every alert of
//! the generated rules has a runbook that the daemon serves.
//!
//! mdBook is installed by `scripts/test` (`cargo install --locked mdbook --version 0.5.4`); a
//! missing mdbook fails the build test with how to install it (tests never skip).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use lagbudget::generate::rules::{RulesFormat, RulesOptions, render};
use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use yaml_rust2::YamlLoader;

use crate::support::Daemon;

/// What the issue asks of the README: what it is and why, the two commands, a tour and links.
const README_LIMIT_BYTES: u64 = 15 * 1024;
const MDBOOK_VERSION: &str = "0.5.4";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// README.md, docs/**/*.md, the READMEs next to the alerts and dashboards, ARCHITECTURE.md.
fn checked_files() -> Vec<PathBuf> {
    let mut files = vec![
        repo("README.md"),
        repo("ARCHITECTURE.md"),
        repo("alerts/README.md"),
        repo("dashboards/README.md"),
    ];
    let mut dirs = vec![repo("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// A heading's anchor as GitHub and mdBook make it: lower case, letters, digits, `-` and `_`
/// kept, spaces turned into `-`, everything else (punctuation, backticks, dashes) dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                Some(c.to_lowercase().next().unwrap_or(c))
            } else if c == ' ' {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

struct Page {
    /// Every heading's anchor, repeats numbered `-1`, `-2`, … as GitHub and mdBook do.
    anchors: BTreeSet<String>,
    /// Every link and image destination, with the line it is on.
    links: Vec<(usize, String)>,
}

fn parse(path: &Path) -> Page {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let line_of = |offset: usize| text[..offset].matches('\n').count() + 1;
    let mut anchors = BTreeSet::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut links = Vec::new();
    let mut heading: Option<String> = None;
    for (event, range) in Parser::new_ext(&text, Options::ENABLE_TABLES).into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let base = slug(&heading.take().expect("a heading was open"));
                let count = seen.entry(base.clone()).or_insert(0);
                anchors.insert(if *count == 0 {
                    base
                } else {
                    format!("{base}-{count}")
                });
                *count += 1;
            }
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                links.push((line_of(range.start), dest_url.to_string()));
            }
            _ => {}
        }
    }
    Page { anchors, links }
}

/// `base/relative` with `.` and `..` taken out, without touching the file system.
fn join(base: &Path, relative: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for component in base.join(relative).components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn is_external(dest: &str) -> bool {
    dest.contains("://") || dest.starts_with("mailto:")
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let files = checked_files();
    assert!(
        files.len() > 30,
        "found only {} Markdown files",
        files.len()
    );
    let mut pages: BTreeMap<PathBuf, Page> = BTreeMap::new();
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let page = parse(file);
        for (line, dest) in &page.links {
            if is_external(dest) {
                continue;
            }
            checked += 1;
            let (path, anchor) = dest.split_once('#').unwrap_or((dest, ""));
            let target = if path.is_empty() {
                file.clone()
            } else {
                join(file.parent().expect("a file has a folder"), path)
            };
            let place = format!(
                "{}:{line}: {dest}",
                file.strip_prefix(repo("")).unwrap_or(file).display()
            );
            if !target.exists() {
                broken.push(format!("{place}: no such file"));
                continue;
            }
            if anchor.is_empty() {
                continue;
            }
            if target.extension().is_none_or(|e| e != "md") {
                broken.push(format!(
                    "{place}: an anchor into a file that is not Markdown"
                ));
                continue;
            }
            let anchors = &pages
                .entry(target.clone())
                .or_insert_with(|| parse(&target))
                .anchors;
            if !anchors.contains(anchor) {
                broken.push(format!("{place}: no heading with anchor #{anchor}"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked > 200, "only {checked} relative links checked");
}

#[test]
fn the_checker_finds_anchors_as_github_and_mdbook_make_them() {
    assert_eq!(
        slug("Probe reference: `sql_watermark`"),
        "probe-reference-sql_watermark"
    );
    assert_eq!(slug("What \"lag\" means here"), "what-lag-means-here");
    assert_eq!(slug("`sources.NAME`"), "sourcesname");
    assert_eq!(
        slug("A PostgreSQL walkthrough: `scripts/quickstart`"),
        "a-postgresql-walkthrough-scriptsquickstart"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join("page.md");
    std::fs::write(
        &page,
        "# Title\n\n## Traps\n\n```sh\n# not a heading\n```\n\n## Traps\n\n\
         See [here](#traps-1), `[not](a-link.md)` and ![pic](images/x.png).\n",
    )
    .expect("write page");
    let parsed = parse(&page);
    assert_eq!(
        parsed.anchors,
        ["title", "traps", "traps-1"].map(str::to_owned).into()
    );
    assert_eq!(
        parsed.links,
        [(11, "#traps-1".to_owned()), (11, "images/x.png".to_owned())]
    );
    assert_eq!(
        join(Path::new("/r/docs/src/probes"), "../../../README.md"),
        Path::new("/r/README.md")
    );
}

#[test]
fn the_readme_is_short() {
    let size = std::fs::metadata(repo("README.md"))
        .expect("README.md")
        .len();
    assert!(
        size < README_LIMIT_BYTES,
        "README.md is {size} bytes; keep it under {README_LIMIT_BYTES}: the reference belongs in docs/"
    );
}

/// Every page under docs/src is in SUMMARY.md: mdBook builds only what SUMMARY.md lists, so a
/// page missing there is in the repository but not in the book.
#[test]
fn the_book_lists_every_page() {
    let src = repo("docs/src");
    let summary = parse(&src.join("SUMMARY.md"));
    let listed: BTreeSet<PathBuf> = summary
        .links
        .iter()
        .filter(|(_, dest)| !dest.is_empty())
        .map(|(_, dest)| join(&src, dest))
        .collect();
    let unlisted: Vec<String> = checked_files()
        .into_iter()
        .filter(|f| f.starts_with(&src) && !f.ends_with("SUMMARY.md") && !listed.contains(f))
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        unlisted.is_empty(),
        "pages not in docs/src/SUMMARY.md:\n{}",
        unlisted.join("\n")
    );
}

fn mdbook() -> PathBuf {
    if let Some(path) = std::env::var_os("LAGBUDGET_MDBOOK") {
        return PathBuf::from(path);
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")));
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain(cargo_home.map(|home| home.join("bin")))
        .map(|dir| dir.join("mdbook"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "mdbook is not installed: run scripts/test, which installs it with \
                 `cargo install --locked mdbook --version {MDBOOK_VERSION}`"
            )
        })
}

/// `mdbook build docs` succeeds, within a bound, into a temp dir: every page of SUMMARY.md
/// exists (`create-missing = false`) and the book has its search index.
#[test]
fn the_book_builds() {
    let mdbook = mdbook();
    let out = tempfile::tempdir().expect("tempdir");
    // `timeout` bounds the build: a hung mdbook fails the test instead of hanging the suite.
    let output = Command::new("timeout")
        .args(["--kill-after=10", "300"])
        .arg(&mdbook)
        .args(["build", "docs", "-d"])
        .arg(out.path())
        .current_dir(repo(""))
        .output()
        .unwrap_or_else(|e| panic!("run timeout {}: {e}", mdbook.display()));
    assert!(
        output.status.success(),
        "mdbook build docs failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for page in [
        "index.html",
        "configuration.html",
        "probes/canary.html",
        "runbooks/LagbudgetDown.html",
    ] {
        assert!(out.path().join(page).is_file(), "the book has no {page}");
    }
    let search_index = std::fs::read_dir(out.path())
        .expect("read the book")
        .filter_map(Result::ok)
        .any(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("searchindex")
        });
    assert!(search_index, "the book has no search index");
}

/// Every alert of the generated rules has a runbook page, its default `runbook_url` points at
/// the daemon's `/runbooks/{AlertName}`, and a running daemon serves it (and the index); an
/// alert that does not exist is 404.
#[tokio::test]
async fn every_alert_has_a_runbook_that_the_daemon_serves() {
    let rules = render(&RulesOptions::default(), RulesFormat::Prometheus);
    let doc = &YamlLoader::load_from_str(&rules).expect("rules are YAML")[0];
    let alerts: BTreeSet<String> = doc["groups"]
        .as_vec()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_vec().expect("rules"))
        .filter_map(|rule| {
            let alert = rule["alert"].as_str()?;
            let runbook = rule["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or_else(|| panic!("{alert} has a runbook_url"));
            assert!(
                runbook.contains(&format!("http://lagbudget:9464/runbooks/{alert}")),
                "{alert}: {runbook}"
            );
            Some(alert.to_owned())
        })
        .collect();
    assert_eq!(alerts.len(), 9, "{alerts:?}");

    let config = std::fs::read_to_string(repo("tests/fixtures/config/good/minimal.yaml"))
        .expect("the minimal config");
    let daemon = Daemon::start(&config).await;
    let response = daemon.get("/runbooks").await;
    assert_eq!(response.status(), 200, "/runbooks");
    let index = response.text().await.expect("body");
    for alert in &alerts {
        let file = repo(&format!("docs/src/runbooks/{alert}.md"));
        assert!(
            file.is_file(),
            "{alert} has no runbook at {}",
            file.display()
        );
        assert!(
            index.contains(&format!("href=\"/runbooks/{alert}\"")),
            "the index links {alert}:\n{index}"
        );
        let response = daemon.get(&format!("/runbooks/{alert}")).await;
        assert_eq!(response.status(), 200, "/runbooks/{alert}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .is_ok_and(|t| t.starts_with("text/html")),
            "{alert}: {:?}",
            response.headers()
        );
        let html = response.text().await.expect("body");
        assert!(html.contains(&format!("<h1>{alert}</h1>")), "{html}");
        assert!(html.contains("<h2>First checks</h2>"), "{alert}:\n{html}");
    }
    let unknown = daemon.get("/runbooks/NoSuchAlert").await;
    assert_eq!(unknown.status(), 404, "/runbooks/NoSuchAlert");
    daemon.stop().await;
}

#[test]
fn every_runbook_says_what_an_on_call_engineer_needs() {
    for entry in std::fs::read_dir(repo("docs/src/runbooks")).expect("docs/src/runbooks") {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|n| n == "index.md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read runbook");
        let headings: Vec<String> = Parser::new(&text)
            .scan(false, |in_h2, event| {
                Some(match event {
                    Event::Start(Tag::Heading {
                        level: HeadingLevel::H2,
                        ..
                    }) => {
                        *in_h2 = true;
                        None
                    }
                    Event::End(TagEnd::Heading(_)) => {
                        *in_h2 = false;
                        None
                    }
                    Event::Text(t) if *in_h2 => Some(t.to_string()),
                    _ => None,
                })
            })
            .flatten()
            .collect();
        for needed in [
            "What it means",
            "Why it fires, and why not sooner",
            "First checks",
            "How to resolve",
            "When it resolves",
        ] {
            assert!(
                headings.iter().any(|h| h == needed),
                "{} has no section {needed:?}: {headings:?}",
                path.display()
            );
        }
        assert!(
            headings.iter().any(|h| h.starts_with("Common causes")),
            "{} has no common causes",
            path.display()
        );
    }
}
