//! Samples per scenario and server, and the table of medians and ratios.

use std::collections::BTreeMap;

pub const SERVERS: [&str; 4] = ["direct", "nginx", "distribution", "portcullis"];

struct Row {
    unit: &'static str,
    higher_is_better: bool,
    samples: BTreeMap<&'static str, Vec<f64>>,
}

/// Every sample, by scenario in the order first seen.
#[derive(Default)]
pub struct Results {
    rows: Vec<(String, Row)>,
}

impl Results {
    pub fn add(
        &mut self,
        scenario: &str,
        unit: &'static str,
        higher: bool,
        server: &'static str,
        v: f64,
    ) {
        let i = match self.rows.iter().position(|(s, _)| s == scenario) {
            Some(i) => i,
            None => {
                self.rows.push((
                    scenario.to_owned(),
                    Row {
                        unit,
                        higher_is_better: higher,
                        samples: BTreeMap::new(),
                    },
                ));
                self.rows.len() - 1
            }
        };
        self.rows[i].1.samples.entry(server).or_default().push(v);
        eprintln!("  {scenario:<50} {server:<13} {v:>10.2} {unit}");
    }

    /// The Markdown table: medians, and portcullis against each anchor.
    pub fn table(&self) -> String {
        let mut out = format!(
            "| scenario | unit | {} | portcullis vs direct | vs nginx | vs distribution |\n|---|---|---|---|---|---|---|---|---|\n",
            SERVERS.join(" | ")
        );
        for (scenario, row) in &self.rows {
            let med = |s: &str| row.samples.get(s).map(|v| median(v));
            let cells: Vec<String> = SERVERS
                .iter()
                .map(|s| med(s).map_or("–".into(), |m| format!("{m:.2}")))
                .collect();
            let ratio = |anchor: &str| match (med("portcullis"), med(anchor)) {
                (Some(p), Some(a)) if a > 0.0 && p > 0.0 => {
                    // "How many times better portcullis is": above 1 it wins.
                    let r = if row.higher_is_better { p / a } else { a / p };
                    format!("{r:.2}×")
                }
                _ => "–".into(),
            };
            out.push_str(&format!(
                "| {scenario} | {} | {} | {} | {} | {} |\n",
                row.unit,
                cells.join(" | "),
                ratio("direct"),
                ratio("nginx"),
                ratio("distribution")
            ));
        }
        out.push_str(
            "\nRatios read \"times better than the anchor\": above 1× portcullis wins \
             (for rates portcullis ÷ anchor; for times, sizes and counts anchor ÷ portcullis).\n",
        );
        out
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
