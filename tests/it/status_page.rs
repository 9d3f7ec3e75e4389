//! The status page in a real browser: a running daemon with budgets in three states (ok: a
//! caught-up projection; breach: one whose worker never applies; unknown: a source nothing
//! listens on), loaded in headless Chromium through WebDriver (`browser.rs`). The DOM of the
//! overview and of a budget page is asserted, screenshots are saved under
//! `target/lagbudget-screenshots/`, both pages fit a 390 px wide phone without horizontal
//! scrolling, and the refresh keeps the scroll position.
//! (The README's picture is the demo's overview: tests/it/demo.rs.)

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::browser::{Driver, Session, png_size};
use crate::support::{Daemon, PATIENCE, Projection, SHARED_PG_DSN, closed_port, unique, wait_for};

/// A phone's CSS width (an iPhone 12 to 15).
const PHONE_WIDTH: u32 = 390;

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/lagbudget-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn save_screenshot(session: &Session<'_>, name: &str) {
    let png = session.screenshot().await;
    let path = screenshot_dir().join(name);
    std::fs::write(&path, &png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    println!("screenshot {} {:?}", path.display(), png_size(&png));
}

/// The overview's budgets as the browser sees them.
const OVERVIEW_SCRIPT: &str = "return [...document.querySelectorAll('section.card')].map(c => ({
  name: c.dataset.budget,
  state: c.querySelector('.state .badge b').textContent,
  shape: c.querySelector('.state .badge [aria-hidden]').textContent,
  link: c.querySelector('h2 a').getAttribute('href'),
  budgetLine: c.querySelectorAll('svg.chart line.budget-line').length,
  svgs: [...c.querySelectorAll('svg')].map(s => ({
    role: s.getAttribute('role'),
    title: (s.querySelector('title') || {}).textContent || '',
    desc: (s.querySelector('desc') || {}).textContent || ''})),
  description: (c.querySelector('p.muted') || {}).textContent || null,
  descriptionElements: c.querySelector('p.muted') ? c.querySelector('p.muted').children.length : 0,
  text: c.innerText}));";

/// A budget page as the browser sees it.
const BUDGET_SCRIPT: &str = "return {
  h1: document.querySelector('h1').textContent,
  state: document.querySelector('.state .badge b').textContent,
  charts: [...document.querySelectorAll('section.probe svg.chart')].map(s => ({
    role: s.getAttribute('role'),
    title: s.querySelector('title').textContent,
    budgetLine: (s.querySelector('line.budget-line') || {dataset: {}}).dataset.value || null,
    lines: s.querySelectorAll('polyline.series, circle.series').length})),
  facts: Object.fromEntries([...document.querySelectorAll('section.probe dl dt')]
    .map(dt => [dt.textContent, dt.nextElementSibling.textContent])),
  transitions: [...document.querySelectorAll('table.transitions tbody tr')]
    .map(tr => [...tr.querySelectorAll('td')].map(td => td.innerText.trim()))};";

const FITS_SCRIPT: &str = "return {scrollWidth: document.documentElement.scrollWidth, \
    innerWidth: window.innerWidth};";

async fn assert_fits_a_phone(session: &Session<'_>, page: &str) {
    let fits = session.execute(FITS_SCRIPT, vec![]).await;
    let (scroll, inner) = (
        fits["scrollWidth"].as_u64().expect("scrollWidth"),
        fits["innerWidth"].as_u64().expect("innerWidth"),
    );
    assert_eq!(
        inner,
        u64::from(PHONE_WIDTH),
        "{page}: the viewport is a phone's"
    );
    assert!(
        scroll <= inner,
        "{page}: no horizontal scroll at {PHONE_WIDTH} px: scrollWidth {scroll} > {inner}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_in_chromium_shows_ok_breach_and_unknown() {
    let caught_up = Projection::caught_up(SHARED_PG_DSN, 3).await;
    let stuck = Projection::create(SHARED_PG_DSN).await;
    stuck.insert(2).await;
    let (ok, breach, unknown) = (
        unique("page_ok"),
        unique("page_breach"),
        unique("page_unknown"),
    );
    let nowhere = closed_port();
    let config = format!(
        "listen: 127.0.0.1:0
sources:
  db: {{ postgres: {{ dsn: \"{SHARED_PG_DSN}\" }} }}
  nowhere: {{ postgres: {{ dsn: \"host=127.0.0.1 port={nowhere} user=postgres dbname=x\" }} }}
budgets:
  - name: {ok}
    description: \"<i>orders</i> & refunds\"
    owner: team-orders
    max_lag: 30s
    objective: {{ target: 99%, window: 1h }}
    probes:
      - {{ name: projection, interval: 1s, sql_watermark: {ok_probe} }}
  - name: {breach}
    description: The worker never applies.
    owner: team-search
    max_lag: 1s
    probes:
      - {{ name: projection, sql_watermark: {breach_probe} }}
  - name: {unknown}
    owner: team-blind
    max_lag: 30s
    probes:
      - {{ name: projection, interval: 1s, sql_watermark: {unknown_probe} }}
",
        ok_probe = caught_up.probe_yaml("db"),
        breach_probe = stuck.probe_yaml("db"),
        unknown_probe = caught_up.probe_yaml("nowhere"),
    );
    let daemon = Daemon::start(&config).await;
    daemon.wait_for_state(&ok, "ok", PATIENCE).await;
    daemon.wait_for_state(&breach, "breach", PATIENCE).await;
    daemon.wait_for_state(&unknown, "unknown", PATIENCE).await;
    // History to draw: a few runs of each probe after the states settled.
    daemon.wait_for_runs(&ok, "projection", 3, PATIENCE).await;

    let driver = Driver::start().await;
    let session = driver.session().await;
    session.set_window_size(1280, 1100).await;
    session.navigate(&daemon.url("/")).await;

    let cards = session.execute(OVERVIEW_SCRIPT, vec![]).await;
    let cards = cards.as_array().expect("cards");
    let card = |name: &str| -> &Value {
        cards
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name} on the overview: {cards:?}"))
    };
    for (name, state, shape) in [
        (&ok, "ok", "●"),
        (&breach, "breach", "■"),
        (&unknown, "unknown", "◆"),
    ] {
        let card = card(name);
        assert_eq!(card["state"], state, "{name}: {card}");
        assert_eq!(
            card["shape"], shape,
            "{name}: the state has a shape, not only a colour"
        );
        assert_eq!(card["link"], format!("/budgets/{name}"));
        assert_eq!(
            card["budgetLine"], 1,
            "{name}: the sparkline draws the budget"
        );
        let svgs = card["svgs"].as_array().expect("svgs");
        assert_eq!(
            svgs.len(),
            2,
            "{name}: a sparkline and a state strip: {card}"
        );
        for svg in svgs {
            assert_eq!(svg["role"], "img", "{name}: {svg}");
            assert!(
                !svg["title"].as_str().expect("title").is_empty()
                    && !svg["desc"].as_str().expect("desc").is_empty(),
                "{name}: every chart has a text alternative: {svg}"
            );
        }
    }
    // User text is text: the description's markup is shown, not interpreted.
    assert_eq!(card(&ok)["description"], "<i>orders</i> & refunds");
    assert_eq!(card(&ok)["descriptionElements"], 0);
    let ok_text = card(&ok)["text"].as_str().expect("text");
    assert!(ok_text.contains("Owner: team-orders"), "{ok_text}");
    assert!(ok_text.contains("Within budget"), "{ok_text}");
    assert!(ok_text.contains("Error budget left"), "{ok_text}");
    let unknown_text = card(&unknown)["text"].as_str().expect("text");
    assert!(
        unknown_text.contains("Lag unknown") && unknown_text.contains("connect:"),
        "unknown is never 0, and the reason is shown: {unknown_text}"
    );
    save_screenshot(&session, "status-overview.png").await;

    session
        .navigate(&daemon.url(&format!("/budgets/{breach}")))
        .await;
    let page = session.execute(BUDGET_SCRIPT, vec![]).await;
    assert_eq!(page["h1"], breach.as_str(), "{page}");
    assert_eq!(page["state"], "breach", "{page}");
    let charts = page["charts"].as_array().expect("charts");
    assert_eq!(charts.len(), 2, "the last hour and 24 hours: {page}");
    assert!(charts.iter().all(|c| c["role"] == "img"), "{page}");
    assert_eq!(
        charts[0]["budgetLine"], "1",
        "the budget of 1 s is drawn: {page}"
    );
    assert!(
        charts[0]["lines"].as_u64().expect("lines") >= 1,
        "the lag is drawn: {page}"
    );
    let facts = &page["facts"];
    // Its position never moves: behind and stalled, which the page says.
    assert_eq!(facts["Freshness"], "fresh, stalled", "{page}");
    assert_eq!(facts["Stalled"], "yes", "{page}");
    assert_eq!(facts["Last error"], "none", "{page}");
    assert!(
        facts["Backlog"].as_str().expect("backlog").contains("rows"),
        "{page}"
    );
    let transitions = page["transitions"].as_array().expect("transitions");
    let newest = transitions
        .first()
        .and_then(Value::as_array)
        .expect("a state change");
    assert_eq!(newest.len(), 3, "time, from, to: {page}");
    assert!(
        newest[2].as_str().expect("to").ends_with("breach"),
        "{page}"
    );
    save_screenshot(&session, "status-budget-breach.png").await;

    session
        .navigate(&daemon.url(&format!("/budgets/{unknown}")))
        .await;
    let page = session.execute(BUDGET_SCRIPT, vec![]).await;
    assert_eq!(page["state"], "unknown", "{page}");
    assert_eq!(page["facts"]["Freshness"], "stale", "{page}");
    assert_eq!(page["facts"]["Lag"], "unknown", "{page}");
    assert!(
        page["facts"]["Last error"]
            .as_str()
            .expect("error")
            .starts_with("connect: "),
        "{page}"
    );
    save_screenshot(&session, "status-budget-unknown.png").await;

    session
        .navigate(&daemon.url("/budgets/no-such-budget"))
        .await;
    let h1 = session
        .execute("return document.querySelector('h1').textContent;", vec![])
        .await;
    assert_eq!(h1, "No budget named “no-such-budget”");

    // A phone: no horizontal scroll on either page.
    session.set_window_size(PHONE_WIDTH, 844).await;
    session
        .navigate(&daemon.url(&format!("/budgets/{breach}")))
        .await;
    assert_fits_a_phone(&session, "budget page").await;
    save_screenshot(&session, "status-budget-phone.png").await;
    session.navigate(&daemon.url("/")).await;
    assert_fits_a_phone(&session, "overview").await;
    save_screenshot(&session, "status-overview-phone.png").await;

    // The refresh swaps in a newer page and keeps the reader where they were.
    let scrolled = session
        .execute(
            "window.scrollTo(0, 600); return [window.scrollY, \
             document.getElementById('content').dataset.generated];",
            vec![],
        )
        .await;
    let (scroll_y, generated) = (scrolled[0].clone(), scrolled[1].clone());
    assert_eq!(
        scroll_y,
        json!(600),
        "the overview is long enough to scroll on a phone"
    );
    let after = wait_for("the page to refresh itself", PATIENCE, || async {
        let now = session
            .execute(
                "return [window.scrollY, document.getElementById('content').dataset.generated];",
                vec![],
            )
            .await;
        (now[1] != generated).then_some(now)
    })
    .await;
    assert_eq!(
        after[0],
        json!(600),
        "the refresh kept the scroll position: {after}"
    );

    session.close().await;
    drop(driver);
    daemon.stop().await;
    caught_up.drop_schema().await;
    stuck.drop_schema().await;
}
