//! Charts as inline SVG, drawn on the server: a time series against a threshold and a strip of
//! budget states. Every chart is an image with a text alternative (`role="img"`, `<title>` and
//! `<desc>` saying what it shows), and nothing is told by colour alone: the budget line is
//! dashed and the warn line dotted, replicas differ by dash pattern, and each state in the strip
//! has its own height.

use std::fmt::Write as _;

use super::escape;
use crate::evaluate::BudgetState;
use crate::history::Stretch;

/// Width and height of the drawing's coordinates; the chart scales to its box.
const WIDTH: f64 = 600.0;

/// One line of a chart: `(unix seconds, value)`, `None` where a run measured nothing (drawn as
/// a gap, never as 0).
pub struct Line {
    pub points: Vec<(f64, Option<f64>)>,
}

/// A time series chart over `[from, to]` with a threshold (the budget) and a warn level.
pub struct Chart<'a> {
    pub title: &'a str,
    pub desc: &'a str,
    pub from: f64,
    pub to: f64,
    pub height: f64,
    pub lines: Vec<Line>,
    /// Min/max bands `(from, to, min, max)` (the 24-hour summary).
    pub bands: Vec<(f64, f64, f64, f64)>,
    pub threshold: Option<f64>,
    pub warn: Option<f64>,
}

fn num(value: f64) -> String {
    format!("{:.1}", value)
}

impl Chart<'_> {
    /// The top of the value axis: the threshold with room above it, or the largest value.
    pub fn y_max(&self) -> f64 {
        let largest = self
            .lines
            .iter()
            .flat_map(|l| l.points.iter().filter_map(|p| p.1))
            .chain(self.bands.iter().map(|b| b.3))
            .fold(0.0_f64, f64::max);
        let threshold = self.threshold.unwrap_or(0.0) * 1.25;
        let top = threshold.max(largest * 1.05);
        if top > 0.0 { top } else { 1.0 }
    }

    pub fn render(&self) -> String {
        let (w, h) = (WIDTH, self.height);
        let y_max = self.y_max();
        let span = (self.to - self.from).max(1e-9);
        let x = |t: f64| ((t - self.from) / span).clamp(0.0, 1.0) * w;
        let y = |v: f64| h - (v / y_max).clamp(0.0, 1.0) * (h - 2.0) - 1.0;
        let mut svg = format!(
            "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" preserveAspectRatio=\"none\" \
             role=\"img\"><title>{}</title><desc>{}</desc>\
             <rect class=\"plot\" x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\"/>",
            escape(self.title),
            escape(self.desc),
        );
        for &(from, to, min, max) in &self.bands {
            let (x0, x1) = (x(from), x(to));
            let _ = write!(
                svg,
                "<rect class=\"band\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>",
                num(x0),
                num(y(max)),
                num((x1 - x0).max(0.5)),
                num((y(min) - y(max)).max(1.0)),
            );
        }
        if let Some(warn) = self.warn {
            let _ = write!(
                svg,
                "<line class=\"warn-line\" data-value=\"{warn}\" x1=\"0\" x2=\"{w}\" y1=\"{0}\" \
                 y2=\"{0}\"/>",
                num(y(warn))
            );
        }
        if let Some(threshold) = self.threshold {
            let _ = write!(
                svg,
                "<line class=\"budget-line\" data-value=\"{threshold}\" x1=\"0\" x2=\"{w}\" \
                 y1=\"{0}\" y2=\"{0}\"/>",
                num(y(threshold))
            );
        }
        for (index, line) in self.lines.iter().enumerate() {
            let class = format!("series s{}", index % 4);
            let mut run: Vec<String> = Vec::new();
            let flush = |run: &mut Vec<String>, svg: &mut String| {
                match run.len() {
                    0 => {}
                    // A lone measurement between gaps is a dot, not an invisible line.
                    1 => {
                        let (cx, cy) = run[0].split_once(',').unwrap_or(("0", "0"));
                        let _ = write!(
                            svg,
                            "<circle class=\"{class}\" cx=\"{cx}\" cy=\"{cy}\" r=\"1.5\"/>"
                        );
                    }
                    _ => {
                        let _ = write!(
                            svg,
                            "<polyline class=\"{class}\" points=\"{}\"/>",
                            run.join(" ")
                        );
                    }
                }
                run.clear();
            };
            for &(t, value) in &line.points {
                match value {
                    Some(v) => run.push(format!("{},{}", num(x(t)), num(y(v)))),
                    None => flush(&mut run, &mut svg),
                }
            }
            flush(&mut run, &mut svg);
        }
        svg.push_str("</svg>");
        svg
    }
}

/// The height of a state's bar in the strip, out of 1: worse is taller.
fn bar_height(state: Option<BudgetState>) -> f64 {
    match state {
        None => 0.08,
        Some(BudgetState::Ok) => 0.3,
        Some(BudgetState::Warn) => 0.55,
        Some(BudgetState::Unknown) => 0.8,
        Some(BudgetState::Breach) => 1.0,
    }
}

/// A strip of the budget's states over `[from, to]`.
pub fn strip(stretches: &[Stretch], from: f64, to: f64, title: &str, desc: &str) -> String {
    let (w, h) = (WIDTH, 24.0);
    let span = (to - from).max(1e-9);
    let x = |t: f64| ((t - from) / span).clamp(0.0, 1.0) * w;
    let mut svg = format!(
        "<svg class=\"strip\" viewBox=\"0 0 {w} {h}\" preserveAspectRatio=\"none\" role=\"img\">\
         <title>{}</title><desc>{}</desc>",
        escape(title),
        escape(desc)
    );
    for stretch in stretches {
        let (x0, x1) = (x(stretch.from), x(stretch.to));
        let height = bar_height(stretch.state) * h;
        let class = stretch.state.map_or("none", BudgetState::as_str);
        let _ = write!(
            svg,
            "<rect class=\"st-{class}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>",
            num(x0),
            num(h - height),
            num((x1 - x0).max(0.5)),
            num(height)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_run_is_a_gap_and_the_budget_a_line() {
        let chart = Chart {
            title: "lag <of> orders",
            desc: "d",
            from: 0.0,
            to: 100.0,
            height: 100.0,
            lines: vec![Line {
                points: vec![
                    (0.0, Some(1.0)),
                    (10.0, Some(2.0)),
                    (20.0, None),
                    (30.0, Some(3.0)),
                    (40.0, Some(4.0)),
                    (50.0, None),
                    (60.0, Some(5.0)),
                ],
            }],
            bands: Vec::new(),
            threshold: Some(8.0),
            warn: Some(6.4),
        };
        let svg = chart.render();
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        assert_eq!(svg.matches("<circle").count(), 1, "{svg}");
        assert!(svg.contains("role=\"img\""));
        assert!(
            svg.contains("<title>lag &lt;of&gt; orders</title>"),
            "{svg}"
        );
        assert!(
            svg.contains("class=\"budget-line\" data-value=\"8\""),
            "{svg}"
        );
        assert!(
            svg.contains("class=\"warn-line\" data-value=\"6.4\""),
            "{svg}"
        );
        // The top of the axis leaves room above the budget.
        assert_eq!(chart.y_max(), 10.0);
    }

    #[test]
    fn worse_states_are_taller_in_the_strip() {
        let stretches = [
            Stretch {
                from: 0.0,
                to: 50.0,
                state: None,
            },
            Stretch {
                from: 50.0,
                to: 100.0,
                state: Some(BudgetState::Breach),
            },
        ];
        let svg = strip(&stretches, 0.0, 100.0, "t", "d");
        assert!(
            svg.contains("class=\"st-none\" x=\"0.0\" y=\"22.1\""),
            "{svg}"
        );
        assert!(
            svg.contains(
                "class=\"st-breach\" x=\"300.0\" y=\"0.0\" width=\"300.0\" height=\"24.0\""
            ),
            "{svg}"
        );
    }
}
