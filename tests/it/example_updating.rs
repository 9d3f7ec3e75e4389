//! Issue 15 acceptance: the embeddable example (`/examples/updating`), loaded in headless
//! Chromium against a daemon whose budget is in breach, shows "Points are updating…"; in `ok`
//! it does not; in `warn` and `unknown` it does. Also served from another origin, as a product page
//! would serve its copy: from an origin in `http.cors_allowed_origins` it reads the state
//! (a simple GET, no preflight); from one not listed the browser refuses it the answer, and
//! the page says "updating…" rather than nothing.

use std::path::Path;

use axum::response::Html;

use crate::chromium::{chromium, require_chromium};
use crate::openapi::daemon_in_every_state;

const UPDATING: &str = "Points are updating…";

#[tokio::test(flavor = "multi_thread")]
async fn the_example_says_updating_in_warn_breach_and_unknown_and_nothing_in_ok() {
    require_chromium();
    // Two product sites on other ports: one the daemon allows, one it does not.
    let allowed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let refused = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let allowed_origin = format!("http://{}", allowed.local_addr().expect("addr"));
    let refused_origin = format!("http://{}", refused.local_addr().expect("addr"));
    let (daemon, projections) = daemon_in_every_state(&format!(
        "http:\n  cors_allowed_origins: [\"{allowed_origin}\"]"
    ))
    .await;

    // The product page's copy: the example as served, pointed at the daemon's origin.
    let example = daemon.text("/examples/updating").await;
    assert!(example.contains("data-api=\"\""), "{example}");
    let copy = example.replacen(
        "data-api=\"\"",
        &format!("data-api=\"http://{}\"", daemon.addr),
        1,
    );
    for listener in [allowed, refused] {
        let page = copy.clone();
        let site = axum::Router::new().route("/", axum::routing::get(move || async { Html(page) }));
        tokio::spawn(async move { axum::serve(listener, site).await });
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "same-breach",
            daemon.url("/examples/updating?budget=behind"),
            "breach",
        ),
        (
            "same-ok",
            daemon.url("/examples/updating?budget=steady"),
            "ok",
        ),
        (
            "same-warn",
            daemon.url("/examples/updating?budget=close"),
            "warn",
        ),
        (
            "same-unknown",
            daemon.url("/examples/updating?budget=blind"),
            "unknown",
        ),
        ("cors-ok", format!("{allowed_origin}/?budget=steady"), "ok"),
        (
            "cors-breach",
            format!("{allowed_origin}/?budget=behind"),
            "breach",
        ),
        // The browser withholds the answer from an origin the daemon does not allow.
        (
            "cors-refused",
            format!("{refused_origin}/?budget=steady"),
            "unknown",
        ),
        // A name that is HTML: encoded into the URL (no such budget: unknown), never markup.
        (
            "same-injected",
            daemon.url("/examples/updating?budget=%3Cimg%20src%3Dx%20id%3Dinjected%3E"),
            "unknown",
        ),
    ];
    // Two Chromiums at a time: each is a few processes, and the machine may have two cores.
    for pair in cases.chunks(2) {
        let runs: Vec<_> = pair
            .iter()
            .map(|(name, url, _)| {
                let (name, url, dir) = ((*name).to_owned(), url.clone(), dir.path().to_owned());
                tokio::task::spawn_blocking(move || dom(&url, &dir, &name))
            })
            .collect();
        for ((name, url, state), run) in pair.iter().zip(runs) {
            let dom = run.await.expect("chromium");
            let note =
                note(&dom).unwrap_or_else(|| panic!("{name}: no note in the DOM of {url}:\n{dom}"));
            println!("{name}: {note}");
            assert!(
                note.contains(&format!("data-state=\"{state}\"")),
                "{name}: {url} read state {state}: {note}"
            );
            assert_eq!(
                note.contains(UPDATING),
                *state != "ok",
                "{name}: {url} says \"{UPDATING}\" exactly when the state is not ok: {note}"
            );
            assert!(
                !dom.contains("id=\"injected\""),
                "{name}: no markup from the address: {dom}"
            );
        }
    }
    daemon.stop().await;
    for projection in projections {
        projection.drop_schema().await;
    }
}

/// The DOM of `url` after its scripts ran, as Chromium built it.
fn dom(url: &str, dir: &Path, name: &str) -> String {
    chromium(
        &[
            "--dump-dom".to_owned(),
            "--virtual-time-budget=5000".to_owned(),
        ],
        url,
        dir,
        name,
    )
    .0
}

/// The example's note element, from its start tag to its end tag.
fn note(dom: &str) -> Option<&str> {
    let start = dom.find("<p id=\"lagbudget-updating\"")?;
    let end = start + dom[start..].find("</p>")?;
    Some(&dom[start..end])
}
