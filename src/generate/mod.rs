//! Generated artefacts: Prometheus alert rules (`lagbudget rules`) and Grafana dashboards
//! (`lagbudget dashboards`), built from the metric name consts in `metrics.rs` so that a renamed
//! metric cannot leave a rule or a panel behind. The output is committed under `alerts/` and
//! `dashboards/`, and a test fails when the committed files are stale.

pub mod dashboards;
pub mod grafana;
pub mod rules;
