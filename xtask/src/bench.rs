//! `cargo xtask bench`: runs the criterion benches and writes `target/bench-report.md`.
//!
//! Besides criterion's own results, the report lists **extra metrics** that a bench binary
//! measured itself (tail latencies, bytes per entry, ratios): any `*.json` file under
//! `target/criterion/` outside criterion's `new/`, `base/`, `change/` and `report/` folders
//! whose top-level object has a string `metric`, a number `value` and optionally `unit` and
//! `note`, e.g. `target/criterion/session_resolve_1m/p99.json`:
//! `{"metric": "session_resolve_1m/p99", "value": 1234.0, "unit": "ns", "note": "…"}`.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::env;

/// Runs the benches (optionally only those matching `filter`) and writes the report.
pub fn run(args: &[String]) -> Result<()> {
    let target = target_dir()?;
    let mut cmd = Command::new("cargo");
    cmd.args(["bench", "--workspace", "--benches", "--"]);
    cmd.args(args);
    env::run_with(&mut cmd)?;
    let (rows, metrics) = collect(&target.join("criterion"))?;
    let report = render(&rows, &metrics);
    let out = target.join("bench-report.md");
    std::fs::write(&out, &report).with_context(|| format!("write {}", out.display()))?;
    println!("{report}");
    eprintln!("xtask: wrote {}", out.display());
    Ok(())
}

/// The cargo target directory (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> Result<PathBuf> {
    let out = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("cargo metadata")?;
    let v: Value = serde_json::from_slice(&out.stdout).context("parse cargo metadata")?;
    v["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}

/// One measured benchmark.
pub struct Row {
    /// `group/function/parameter`.
    pub id: String,
    /// Median time per iteration, nanoseconds.
    pub median_ns: f64,
    /// Bytes or elements processed per iteration, if the bench declared it.
    pub throughput: Option<(String, f64)>,
}

/// One extra metric written by a bench binary (see the module documentation).
pub struct Metric {
    /// Name, e.g. `session_resolve_1m/p99`.
    pub name: String,
    /// The value, in `unit`.
    pub value: f64,
    /// Unit (`ns`, `B`, …); may be empty.
    pub unit: String,
    /// What was measured; may be empty.
    pub note: String,
}

fn collect(root: &Path) -> Result<(Vec<Row>, Vec<Metric>)> {
    let mut rows = Vec::new();
    let mut metrics = Vec::new();
    if root.is_dir() {
        walk(root, &mut rows, &mut metrics)?;
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    metrics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((rows, metrics))
}

/// Reads a metric file; anything that is not one is ignored.
fn read_metric(path: &Path) -> Option<Metric> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    Some(Metric {
        name: v["metric"].as_str()?.to_owned(),
        value: v["value"].as_f64()?,
        unit: text("unit"),
        note: text("note"),
    })
}

fn walk(dir: &Path, rows: &mut Vec<Row>, metrics: &mut Vec<Metric>) -> Result<()> {
    let new = dir.join("new");
    let est = new.join("estimates.json");
    let meta = new.join("benchmark.json");
    if est.is_file() && meta.is_file() {
        let e: Value = serde_json::from_str(&std::fs::read_to_string(&est)?)?;
        let m: Value = serde_json::from_str(&std::fs::read_to_string(&meta)?)?;
        let median_ns = e["median"]["point_estimate"].as_f64().unwrap_or(f64::NAN);
        let id = m["full_id"].as_str().unwrap_or("?").to_owned();
        let throughput = m["throughput"].as_object().and_then(|t| {
            t.iter()
                .next()
                .and_then(|(kind, n)| n.as_f64().map(|n| (kind.clone(), n)))
        });
        rows.push(Row {
            id,
            median_ns,
            throughput,
        });
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let p = entry.path();
        if p.is_dir()
            && p.file_name()
                .is_some_and(|n| n != "new" && n != "base" && n != "report" && n != "change")
        {
            walk(&p, rows, metrics)?;
        } else if p.is_file()
            && p.extension().is_some_and(|e| e == "json")
            && let Some(m) = read_metric(&p)
        {
            metrics.push(m);
        }
    }
    Ok(())
}

fn human_time(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.3} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.3} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

fn human_rate(kind: &str, per_iter: f64, ns: f64) -> String {
    let per_s = per_iter / (ns / 1e9);
    match kind {
        "Bytes" | "BytesDecimal" => {
            if per_s >= 1e9 {
                format!("{:.2} GB/s", per_s / 1e9)
            } else {
                format!("{:.2} MB/s", per_s / 1e6)
            }
        }
        _ => format!("{per_s:.0} /s"),
    }
}

fn render(rows: &[Row], metrics: &[Metric]) -> String {
    let mut s =
        String::from("# Benchmark report\n\nMedians from criterion (`cargo xtask bench`).\n\n");
    s.push_str("| benchmark | median | throughput | ops/s |\n|---|---:|---:|---:|\n");
    for r in rows {
        let tp = r
            .throughput
            .as_ref()
            .map(|(k, n)| human_rate(k, *n, r.median_ns))
            .unwrap_or_default();
        let ops = if r.median_ns > 0.0 {
            1e9 / r.median_ns
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} |",
            r.id,
            human_time(r.median_ns),
            tp,
            ops
        );
    }
    if !metrics.is_empty() {
        s.push_str("\n## Extra metrics\n\nMeasured by the bench binaries themselves.\n\n");
        s.push_str("| metric | value | unit | note |\n|---|---:|---|---|\n");
        for m in metrics {
            let _ = writeln!(
                s,
                "| {} | {:.2} | {} | {} |",
                m.name, m.value, m.unit, m.note
            );
        }
    }
    s
}
