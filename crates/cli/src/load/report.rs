//! The results of a load run: per scenario row our figure and its baselines as min / median /
//! max over the repetitions, the ratios ours ÷ baseline (the median of the per-repetition
//! ratios where both were measured back to back in each repetition, so that the machine's
//! drift during a run cancels out; else of the medians), the results table,
//! the JSON document (`--json`) and a hand-written SVG bar chart (`--svg`; no plotting or
//! font dependency — the viewer renders the text).

use std::fmt::Write as _;

use serde::Serialize;

/// What the Go reference columns say: its baselines cannot be built on this machine.
pub(crate) const GO_UNAVAILABLE: &str = "unavailable (module proxy refuses go-oversync)";

/// Min, median and max of a metric's samples (one sample per repetition).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Stats {
    pub(crate) min: f64,
    pub(crate) median: f64,
    pub(crate) max: f64,
    pub(crate) samples: Vec<f64>,
}

impl Stats {
    /// The summary of `samples` (all zero when there are none).
    pub(crate) fn of(samples: Vec<f64>) -> Stats {
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let (min, max) = match (sorted.first(), sorted.last()) {
            (Some(a), Some(b)) => (*a, *b),
            _ => (0.0, 0.0),
        };
        let median = match sorted.len() {
            0 => 0.0,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Stats {
            min,
            median,
            max,
            samples,
        }
    }
}

/// The nearest-rank percentile `p` (0..=100) of `values` (0 when empty).
pub(crate) fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One baseline of a scenario row.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Baseline {
    /// `raw_postgres` or `raw_sqlite`.
    pub(crate) name: &'static str,
    /// What exactly was measured.
    pub(crate) description: String,
    /// The figure, in the row's unit.
    pub(crate) stats: Stats,
    /// Ours ÷ this baseline: the median of the per-repetition ratios when `paired`, else the
    /// ratio of the medians.
    pub(crate) ratio: f64,
    /// Whether each repetition measured ours and this baseline back to back.
    pub(crate) paired: bool,
}

/// One row of the results: one metric of one scenario.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    /// Stable machine name, e.g. `push_10000`.
    pub(crate) name: String,
    /// The scenario it belongs to (`push`, `pull`, `hydrate`, `many_users`, `watch`).
    pub(crate) scenario: &'static str,
    /// What was measured.
    pub(crate) description: String,
    /// `rows/s`, `bundles/s`, `ms` or `MiB`.
    pub(crate) unit: &'static str,
    /// Whether a larger figure is better (rates) or worse (latency, memory).
    pub(crate) higher_is_better: bool,
    /// Our figure.
    pub(crate) ours: Stats,
    /// The physical limits measured in the same run.
    pub(crate) baselines: Vec<Baseline>,
    /// The Go reference server's figure: never available on this machine.
    pub(crate) go: &'static str,
}

impl Row {
    /// A row with no baselines yet.
    pub(crate) fn new(
        scenario: &'static str,
        name: impl Into<String>,
        description: impl Into<String>,
        unit: &'static str,
        ours: Stats,
    ) -> Row {
        Row {
            name: name.into(),
            scenario,
            description: description.into(),
            unit,
            higher_is_better: unit.ends_with("/s"),
            ours,
            baselines: Vec::new(),
            go: GO_UNAVAILABLE,
        }
    }

    /// Adds a baseline measured apart from our repetitions; the ratio is of the medians.
    pub(crate) fn baseline(
        mut self,
        name: &'static str,
        description: impl Into<String>,
        stats: Stats,
    ) -> Row {
        let ratio = if stats.median > 0.0 {
            self.ours.median / stats.median
        } else {
            0.0
        };
        self.baselines.push(Baseline {
            name,
            description: description.into(),
            stats,
            ratio,
            paired: false,
        });
        self
    }

    /// Adds a baseline whose sample `i` was measured right after (or before) our sample `i`;
    /// the ratio is the median of the per-repetition ratios. Falls back to [`Row::baseline`]
    /// when the sample counts differ or a baseline sample is not positive.
    pub(crate) fn paired_baseline(
        self,
        name: &'static str,
        description: impl Into<String>,
        stats: Stats,
    ) -> Row {
        let pairable = !stats.samples.is_empty()
            && stats.samples.len() == self.ours.samples.len()
            && stats.samples.iter().all(|b| *b > 0.0);
        if !pairable {
            return self.baseline(name, description, stats);
        }
        let ratios: Vec<f64> = self
            .ours
            .samples
            .iter()
            .zip(&stats.samples)
            .map(|(ours, base)| ours / base)
            .collect();
        let mut row = self;
        row.baselines.push(Baseline {
            name,
            description: description.into(),
            ratio: Stats::of(ratios).median,
            stats,
            paired: true,
        });
        row
    }

    fn baseline_named(&self, name: &str) -> Option<&Baseline> {
        self.baselines.iter().find(|b| b.name == name)
    }
}

/// The whole JSON document of a run.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// Format version of this document.
    pub(crate) format: u32,
    /// The Go reference's status for every Go column.
    pub(crate) go_reference: &'static str,
    /// Where the server ran and how memory was measured.
    pub(crate) setup: Setup,
    /// The sizes the run used.
    pub(crate) config: serde_json::Value,
    /// Every row, scenario by scenario.
    pub(crate) rows: Vec<Row>,
}

/// The environment of a run.
#[derive(Debug, Serialize)]
pub(crate) struct Setup {
    /// `in-process (throwaway PostgreSQL)` or the `--server-url`.
    pub(crate) server: String,
    /// Logical CPUs of this machine.
    pub(crate) cpus: usize,
    /// Notes on what the figures mean.
    pub(crate) notes: Vec<String>,
}

fn human(value: f64) -> String {
    if value == 0.0 {
        return "0".to_owned();
    }
    if value.abs() >= 100.0 {
        let digits = format!("{:.0}", value);
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 && c.is_ascii_digit() {
                out.push(',');
            }
            out.push(c);
        }
        return out;
    }
    if value.abs() >= 10.0 {
        return format!("{value:.1}");
    }
    format!("{value:.2}")
}

fn ratio(value: f64) -> String {
    if value >= 10.0 {
        format!("{value:.0}×")
    } else if value >= 0.1 {
        format!("{value:.2}×")
    } else {
        format!("{value:.3}×")
    }
}

impl Report {
    /// The results table as plain text (also used as the README's table, in Markdown form
    /// when `markdown`).
    pub(crate) fn table(&self, markdown: bool) -> String {
        let header = [
            "scenario",
            "unit",
            "ours median",
            "ours min … max",
            "raw PostgreSQL",
            "ours/raw PG",
            "raw SQLite",
            "ours/raw SQLite",
            "Go reference",
            "ours/Go",
        ];
        let mut lines: Vec<Vec<String>> = Vec::new();
        for row in &self.rows {
            let pg = row.baseline_named("raw_postgres");
            let sq = row.baseline_named("raw_sqlite");
            lines.push(vec![
                row.name.clone(),
                row.unit.to_owned(),
                human(row.ours.median),
                format!("{} … {}", human(row.ours.min), human(row.ours.max)),
                pg.map_or_else(|| "—".to_owned(), |b| human(b.stats.median)),
                pg.map_or_else(|| "—".to_owned(), |b| ratio(b.ratio)),
                sq.map_or_else(|| "—".to_owned(), |b| human(b.stats.median)),
                sq.map_or_else(|| "—".to_owned(), |b| ratio(b.ratio)),
                "unavailable".to_owned(),
                "unavailable".to_owned(),
            ]);
        }
        let mut out = String::new();
        if markdown {
            let _ = writeln!(out, "| {} |", header.join(" | "));
            let _ = writeln!(
                out,
                "|{}|",
                header
                    .iter()
                    .enumerate()
                    .map(|(i, _)| if i < 2 { "---" } else { "---:" })
                    .collect::<Vec<_>>()
                    .join("|")
            );
            for line in &lines {
                let _ = writeln!(out, "| {} |", line.join(" | "));
            }
        } else {
            let widths: Vec<usize> = (0..header.len())
                .map(|i| {
                    lines
                        .iter()
                        .map(|l| l[i].chars().count())
                        .chain([header[i].chars().count()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let render = |cells: Vec<String>| -> String {
                cells
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let pad = widths[i].saturating_sub(c.chars().count());
                        if i < 2 {
                            format!("{c}{}", " ".repeat(pad))
                        } else {
                            format!("{}{c}", " ".repeat(pad))
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_owned()
            };
            let _ = writeln!(
                out,
                "{}",
                render(header.iter().map(|h| (*h).to_owned()).collect())
            );
            for line in lines {
                let _ = writeln!(out, "{}", render(line));
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "Go reference: {}", self.go_reference);
        out
    }

    /// A bar chart: one group per row with a baseline (or a figure worth showing), bars
    /// scaled to the group's largest median, each labelled with its value.
    pub(crate) fn svg(&self) -> String {
        const WIDTH: f64 = 900.0;
        const LABEL: f64 = 250.0;
        const BAR_MAX: f64 = 480.0;
        const BAR_H: f64 = 14.0;
        const GAP: f64 = 14.0;
        let series: [(&str, &str); 3] = [
            ("ours", "#2f6fdf"),
            ("raw_postgres", "#7a7a7a"),
            ("raw_sqlite", "#c8a13a"),
        ];
        let mut body = String::new();
        let mut y = 60.0;
        for row in &self.rows {
            let mut bars: Vec<(&str, &str, f64)> = vec![("ours", series[0].1, row.ours.median)];
            for (name, color) in &series[1..] {
                if let Some(b) = row.baseline_named(name) {
                    bars.push((name, color, b.stats.median));
                }
            }
            let top = bars.iter().map(|b| b.2).fold(0.0_f64, f64::max);
            let group_h = bars.len() as f64 * (BAR_H + 3.0);
            let _ = writeln!(
                body,
                r#"<text x="{:.0}" y="{:.1}" text-anchor="end" font-size="12">{} ({})</text>"#,
                LABEL - 10.0,
                y + group_h / 2.0 + 4.0,
                xml(&row.name),
                xml(row.unit)
            );
            for (i, (name, color, value)) in bars.iter().enumerate() {
                let len = if top > 0.0 {
                    (value / top * BAR_MAX).max(1.5)
                } else {
                    1.5
                };
                let by = y + i as f64 * (BAR_H + 3.0);
                let _ = writeln!(
                    body,
                    r#"<rect x="{LABEL:.0}" y="{by:.1}" width="{len:.1}" height="{BAR_H:.0}" fill="{color}"><title>{name}: {}</title></rect>"#,
                    human(*value)
                );
                let _ = writeln!(
                    body,
                    r#"<text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
                    LABEL + len + 5.0,
                    by + BAR_H - 3.0,
                    xml(&human(*value))
                );
            }
            y += group_h + GAP;
        }
        let height = y + 30.0;
        let mut legend = String::new();
        for (i, (name, color)) in series.iter().enumerate() {
            let x = LABEL + i as f64 * 150.0;
            let _ = write!(
                legend,
                r#"<rect x="{x:.0}" y="30" width="12" height="12" fill="{color}"/><text x="{:.0}" y="40" font-size="12">{name}</text>"#,
                x + 16.0
            );
        }
        format!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0}" height="{height:.0}" viewBox="0 0 {WIDTH:.0} {height:.0}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="20" font-size="14" font-weight="bold">oversync load: medians; bars relative to the largest of each group (Go reference: unavailable)</text>
{legend}
{body}<text x="10" y="{:.0}" font-size="11" fill="#555">rows/s and bundles/s: longer is better; ms and MiB: shorter is better</text>
</svg>
"##,
            height - 10.0
        )
    }
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_take_the_middle_of_the_sorted_samples() {
        let s = Stats::of(vec![5.0, 1.0, 3.0]);
        assert_eq!((s.min, s.median, s.max), (1.0, 3.0, 5.0));
        assert_eq!(Stats::of(vec![4.0, 2.0]).median, 3.0);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }

    #[test]
    fn ratios_divide_our_median_by_the_baselines() {
        let row = Row::new("push", "push_10", "", "rows/s", Stats::of(vec![10.0])).baseline(
            "raw_postgres",
            "",
            Stats::of(vec![40.0]),
        );
        assert_eq!(row.baselines[0].ratio, 0.25);
        assert!(row.higher_is_better);
    }

    #[test]
    fn paired_ratios_are_the_median_of_the_per_repetition_ratios() {
        // The machine halves its speed in the third repetition: the ratio of the medians
        // (20 / 60) would say 0.33, every repetition says 0.5.
        let row = Row::new(
            "push",
            "push_10",
            "",
            "rows/s",
            Stats::of(vec![20.0, 20.0, 10.0]),
        )
        .paired_baseline("raw_postgres", "", Stats::of(vec![40.0, 40.0, 20.0]));
        assert_eq!(row.baselines[0].ratio, 0.5);
        assert!(row.baselines[0].paired);
        // Unequal sample counts cannot be paired.
        let row = Row::new("push", "push_10", "", "rows/s", Stats::of(vec![10.0, 30.0]))
            .paired_baseline("raw_sqlite", "", Stats::of(vec![40.0]));
        assert_eq!(row.baselines[0].ratio, 0.5);
        assert!(!row.baselines[0].paired);
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(human(1_234_567.0), "1,234,567");
        assert_eq!(human(12.34), "12.3");
        assert_eq!(human(0.5), "0.50");
    }
}
