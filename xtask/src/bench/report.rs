//! Statistics, the printed tables (Markdown, so a run can be pasted into the README) and
//! `results.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};

use super::peers::{LoadSummary, OtherLoad};

/// Median of `v` (NaN if empty).
pub fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

/// Nearest-rank percentile of `v` (NaN if empty).
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub notes: Vec<String>,
}

impl Table {
    pub fn new(title: impl Into<String>, header: &[&str]) -> Table {
        Table {
            title: title.into(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn markdown(&self) -> String {
        let cols = self.header.len();
        let mut width = vec![3usize; cols];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (i, w) in width.iter().enumerate() {
                let c = cells.get(i).map_or("", String::as_str);
                let _ = write!(s, " {c:<w$} |");
            }
            s
        };
        let mut out = format!("### {}\n\n{}\n|", self.title, line(&self.header));
        for w in &width {
            let _ = write!(out, "{}|", "-".repeat(w + 2));
        }
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
            out.push('\n');
        }
        for n in &self.notes {
            let _ = writeln!(out, "\n{n}");
        }
        out
    }
}

/// A target from the issue: met, missed, or not measured in this run.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub met: Option<bool>,
    pub detail: String,
}

/// What a report held at one point (see [`Report::tag_since`]).
pub struct Mark {
    tables: usize,
    targets: usize,
    sections: std::collections::BTreeSet<String>,
}

#[derive(Default)]
pub struct Report {
    pub tables: Vec<Table>,
    pub targets: Vec<Target>,
    pub sections: BTreeMap<String, Value>,
}

pub struct RunInfo {
    pub date: String,
    pub command: String,
    pub cpus: usize,
    pub kernel: String,
    pub load: LoadSummary,
    pub duration: Duration,
    pub rounds: usize,
    pub quick: bool,
    pub peers: BTreeMap<String, String>,
    pub idle_poll: bool,
    /// CPU used by other processes over the whole run and per section (when the bench could
    /// put itself in a cgroup to tell its own CPU time apart).
    pub others: Option<(OtherLoad, Vec<(String, OtherLoad)>)>,
}

impl Report {
    pub fn target(&mut self, name: impl Into<String>, met: Option<bool>, detail: impl Into<String>) {
        self.targets.push(Target { name: name.into(), met, detail: detail.into() });
    }

    /// Where the report stands now, for [`Report::tag_since`].
    pub fn mark(&self) -> Mark {
        Mark {
            tables: self.tables.len(),
            targets: self.targets.len(),
            sections: self.sections.keys().cloned().collect(),
        }
    }

    /// Marks what was added since `mark` with `tag` (a section run once per daemon setting):
    /// table titles and target names get `[tag]`, new JSON sections the key `<key> [tag]`.
    pub fn tag_since(&mut self, mark: Mark, tag: &str) {
        for t in &mut self.tables[mark.tables..] {
            t.title = format!("{} [{tag}]", t.title);
        }
        for t in &mut self.targets[mark.targets..] {
            t.name = format!("{} [{tag}]", t.name);
        }
        let added: Vec<String> = self.sections.keys().filter(|k| !mark.sections.contains(*k)).cloned().collect();
        for k in added {
            if let Some(v) = self.sections.remove(&k) {
                self.sections.insert(format!("{k} [{tag}]"), v);
            }
        }
    }

    pub fn render(&self, info: &RunInfo) -> String {
        let l = &info.load;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Run {} on {} CPUs (Linux {}), loopback and a veth pair between two network namespaces; \
             `{}`; {} round(s) per case unless its table says otherwise, {:.0} s. Load average (1/5/15 min) before: {:.2} {:.2} {:.2}; \
             1-min load during the run (every 5 s, includes the bench itself): min {:.2}, median {:.2}, \
             max {:.2}; after: {:.2} {:.2} {:.2}. Idle CPUs {}. Peers: {}.\n",
            info.date,
            info.cpus,
            info.kernel,
            info.command,
            info.rounds,
            info.duration.as_secs_f64(),
            l.before[0],
            l.before[1],
            l.before[2],
            l.min,
            l.median,
            l.max,
            l.after[0],
            l.after[1],
            l.after[2],
            if info.idle_poll { "poll (/dev/cpu_dma_latency held at 0)" } else { "may halt (--no-idle-poll)" },
            info.peers.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
        );
        if let Some((total, per)) = &info.others {
            let _ = writeln!(
                out,
                "Other processes on the machine (not the bench, its servers or its peers) kept {:.2} of the {} CPUs \
                 busy on average during the run, by section: {} (user + system + steal time of the machine minus \
                 the bench's own cgroup).\n",
                total.cpus(),
                info.cpus,
                per.iter().map(|(n, o)| format!("{n}: {:.2}", o.cpus())).collect::<Vec<_>>().join(", ")
            );
        }
        for t in &self.tables {
            out.push_str(&t.markdown());
            out.push('\n');
        }
        let mut targets = Table::new("Targets", &["target", "result", "measured"]);
        for t in &self.targets {
            let verdict = match t.met {
                Some(true) => "met",
                Some(false) => "**MISSED**",
                None => "not measured",
            };
            targets.row(vec![t.name.clone(), verdict.to_string(), t.detail.clone()]);
        }
        out.push_str(&targets.markdown());
        out
    }

    pub fn json(&self, info: &RunInfo) -> Value {
        let l = &info.load;
        json!({
            "date": info.date,
            "command": info.command,
            "machine": { "cpus": info.cpus, "kernel": info.kernel },
            "load_average": {
                "before": l.before, "after": l.after,
                "during_1min": { "min": l.min, "median": l.median, "max": l.max },
            },
            "duration_s": info.duration.as_secs_f64(),
            "rounds": info.rounds,
            "quick": info.quick,
            "idle_poll": info.idle_poll,
            "other_processes_cpus": info.others.as_ref().map(|(t, per)| json!({
                "run": t.cpus(),
                "sections": per.iter().map(|(n, o)| (n.clone(), o.cpus())).collect::<BTreeMap<_, _>>(),
            })),
            "peers": info.peers,
            "sections": self.sections,
            "targets": self.targets.iter().map(|t| json!({
                "target": t.name, "met": t.met, "detail": t.detail,
            })).collect::<Vec<_>>(),
        })
    }
}

/// `x` with 3 significant-ish digits.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        "-".to_string()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

pub fn ratio(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}x")
    } else {
        "-".to_string()
    }
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(median(&v), 3.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 99.0), 5.0);
        assert_eq!(percentile(&v, 100.0), 5.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn a_second_run_of_a_section_is_told_apart_by_its_tag() {
        let mut r = Report::default();
        let run = |r: &mut Report, tag: &str| {
            let mark = r.mark();
            r.tables.push(Table::new("HTTP", &["a"]));
            r.target("fast", Some(true), "");
            r.sections.insert("http".into(), json!(1));
            r.tag_since(mark, tag);
        };
        run(&mut r, "journal on");
        run(&mut r, "journal off");
        let titles: Vec<&str> = r.tables.iter().map(|t| t.title.as_str()).collect();
        assert_eq!(titles, ["HTTP [journal on]", "HTTP [journal off]"]);
        assert_eq!(r.targets[1].name, "fast [journal off]");
        let keys: Vec<&String> = r.sections.keys().collect();
        assert_eq!(keys, ["http [journal off]", "http [journal on]"]);
    }

    #[test]
    fn tables_render_as_markdown() {
        let mut t = Table::new("T", &["a", "bb"]);
        t.row(vec!["1".into(), "22".into()]);
        assert_eq!(t.markdown(), "### T\n\n| a   | bb  |\n|-----|-----|\n| 1   | 22  |\n");
    }
}
