//! The config rules of the heartbeat that both replica kinds write: its default write period
//! and its limit, and the replicas a probe may list.

use std::time::Duration;

use crate::config::decode::{Ctx, Spanned, Text};
use crate::model::format_duration;

/// The longest heartbeat write period chosen by default, and the shortest: lag is measured to
/// within one period, and writing more often than 10 times a second gains little.
const DEFAULT_WRITE_PERIOD_MAX: Duration = Duration::from_secs(1);
const DEFAULT_WRITE_PERIOD_MIN: Duration = Duration::from_millis(100);

/// Reports a replica that is the primary, or listed twice; true when there is none.
pub(crate) fn check_replicas<'a>(
    ctx: &mut Ctx<'_>,
    primary: Option<&Text>,
    replicas: impl IntoIterator<Item = &'a Text>,
    what: &str,
    itself: &str,
) -> bool {
    let mut ok = true;
    let mut seen: Vec<&str> = Vec::new();
    for replica in replicas {
        let message = if primary.is_some_and(|primary| primary.value == replica.value) {
            format!("{what} {} is the primary: {itself}", replica.quoted())
        } else if seen.contains(&replica.value.as_str()) {
            format!("duplicate {what} {}", replica.quoted())
        } else {
            seen.push(&replica.value);
            continue;
        };
        ctx.error(replica.span, &replica.path, message);
        ok = false;
    }
    ok
}

/// A heartbeat's write period: the configured one, which must be at most `max_lag / 2`
/// (lag is measured to within one period), or `max_lag / 10` between 100ms and 1s.
pub(crate) fn resolve_write_period(
    ctx: &mut Ctx<'_>,
    configured: Option<&Spanned<Duration>>,
    max_lag: Option<Duration>,
) -> Duration {
    match (configured, max_lag) {
        (Some(period), Some(max_lag)) => {
            if period.value > max_lag / 2 {
                ctx.error(
                    period.span,
                    &period.path,
                    format!(
                        "write_period {} is above half of max_lag {}: lag is only measured to \
                         within one write period",
                        period.shown(),
                        format_duration(max_lag)
                    ),
                );
            }
            period.value
        }
        (Some(period), None) => period.value,
        (None, Some(max_lag)) => {
            (max_lag / 10).clamp(DEFAULT_WRITE_PERIOD_MIN, DEFAULT_WRITE_PERIOD_MAX)
        }
        (None, None) => DEFAULT_WRITE_PERIOD_MAX,
    }
}

/// The default `instance` of heartbeat rows and canary markers: `LAGBUDGET_INSTANCE` when set
/// (two daemons on one host, such as two containers sharing the host's name, need one each),
/// else this machine's host name.
pub(crate) fn default_instance() -> String {
    if let Some(name) = std::env::var("LAGBUDGET_INSTANCE")
        .ok()
        .filter(|name| !name.trim().is_empty())
    {
        return name.trim().to_owned();
    }
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| {
            let name = std::fs::read_to_string(path).ok()?;
            let name = name.trim();
            (!name.is_empty()).then(|| name.to_owned())
        })
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|name| !name.is_empty())
        })
        .unwrap_or_else(|| "lagbudget".to_owned())
}
