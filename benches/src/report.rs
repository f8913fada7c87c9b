//! Results: samples per workload and system, medians, ratios, the Markdown table and JSON.
//!
//! A ratio is a system's median divided by the basis system's median (kernel overlayfs,
//! or fuse-overlayfs for memory) from the same run. For seconds and MiB it is a cost ratio
//! (lower is better); for MB/s and IOPS a throughput ratio (higher is better).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::systems::System;
use crate::workloads::{Unit, Workload};

/// One system's numbers on one workload.
#[derive(Debug, Default, Serialize)]
pub(crate) struct SystemResult {
    /// Every measured value, in run order.
    pub(crate) samples: Vec<f64>,
    /// Errors of failed repetitions.
    pub(crate) errors: Vec<String>,
    /// Median of `samples`.
    pub(crate) median: Option<f64>,
    /// `median` over the basis system's median.
    pub(crate) ratio: Option<f64>,
}

/// One workload's results.
#[derive(Debug, Serialize)]
pub(crate) struct WorkloadResult {
    /// Short name.
    pub(crate) name: &'static str,
    /// Title in the table.
    pub(crate) title: &'static str,
    /// Unit label.
    pub(crate) unit: &'static str,
    /// Whether bigger numbers are better.
    pub(crate) higher_is_better: bool,
    /// The ratio basis.
    pub(crate) ratio_to: Option<System>,
    /// rfs's target, as text.
    pub(crate) target: Option<String>,
    /// Whether rfs meets it.
    pub(crate) target_met: Option<bool>,
    /// Per system.
    pub(crate) systems: BTreeMap<System, SystemResult>,
    #[serde(skip)]
    workload: Workload,
}

impl WorkloadResult {
    /// An empty result for `w`.
    pub(crate) fn new(w: &Workload) -> WorkloadResult {
        WorkloadResult {
            name: w.name,
            title: w.title,
            unit: w.unit.label(),
            higher_is_better: w.unit.higher_is_better(),
            ratio_to: w.basis,
            target: w.target.map(|t| t.show(w.basis)),
            target_met: None,
            systems: BTreeMap::new(),
            workload: *w,
        }
    }

    /// Records one measurement (or its error).
    pub(crate) fn record(&mut self, sys: System, r: &anyhow::Result<f64>) {
        let e = self.systems.entry(sys).or_default();
        match r {
            Ok(v) => e.samples.push(*v),
            Err(err) => e.errors.push(format!("{err:#}")),
        }
    }

    /// Computes medians, ratios and the target verdict.
    pub(crate) fn finish(&mut self) {
        for r in self.systems.values_mut() {
            r.median = median(&r.samples);
        }
        let basis = self
            .workload
            .basis
            .and_then(|b| self.systems.get(&b))
            .and_then(|r| r.median);
        for r in self.systems.values_mut() {
            r.ratio = match (r.median, basis) {
                (Some(m), Some(b)) if b > 0.0 => Some(m / b),
                _ => None,
            };
        }
        if let (Some(t), Some(rfs)) = (self.workload.target, self.systems.get(&System::Rfs)) {
            if let Some(m) = rfs.median {
                self.target_met = t.met(m, rfs.ratio);
            }
        }
    }
}

/// The median (mean of the middle two for an even count).
pub(crate) fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

/// A value in its unit, with sensible precision.
pub(crate) fn fmt_value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Seconds => significant(v, 3),
        Unit::MBps | Unit::Iops => format!("{v:.0}"),
        Unit::MiB | Unit::Micros => format!("{v:.1}"),
    }
}

/// `v` with `digits` significant digits (at least the integer part).
fn significant(v: f64, digits: i32) -> String {
    if v <= 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let magnitude = v.log10().floor() as i32;
    let decimals = (digits - 1 - magnitude).max(0) as usize;
    format!("{v:.decimals$}")
}

/// The Markdown table: one row per workload, a column per system.
pub(crate) fn table(results: &[WorkloadResult], systems: &[System]) -> String {
    let mut s = String::from("| workload | unit |");
    for sys in systems {
        let _ = write!(s, " {} |", sys.name());
    }
    s.push_str(" rfs target | met |\n|---|---|");
    for _ in systems {
        s.push_str("---|");
    }
    s.push_str("---|---|\n");
    for r in results {
        let _ = write!(s, "| {} | {} |", r.title, r.unit);
        for sys in systems {
            let cell = match r.systems.get(sys) {
                None => "–".to_string(),
                Some(x) => match x.median {
                    None if !x.errors.is_empty() => "error".to_string(),
                    None => "–".to_string(),
                    Some(m) => {
                        let v = fmt_value(r.workload.unit, m);
                        match (x.ratio, r.ratio_to) {
                            (Some(q), Some(b)) if b != *sys => format!("{v} ({q:.2}×)"),
                            _ => v,
                        }
                    }
                },
            };
            let _ = write!(s, " {cell} |");
        }
        let met = match r.target_met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None if r.target.is_some() => "?",
            None => "",
        };
        let _ = writeln!(s, " {} | {met} |", r.target.as_deref().unwrap_or(""));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn significant_digits() {
        assert_eq!(fmt_value(Unit::Seconds, 0.05904), "0.0590");
        assert_eq!(fmt_value(Unit::Seconds, 1.2345), "1.23");
        assert_eq!(fmt_value(Unit::Seconds, 123.4), "123");
        assert_eq!(fmt_value(Unit::Seconds, 0.000_612), "0.000612");
    }

    #[test]
    fn ratios_and_target() {
        let w = crate::workloads::WORKLOADS
            .iter()
            .find(|w| w.name == "find-warm")
            .unwrap();
        let mut r = WorkloadResult::new(w);
        for v in [1.0, 1.2, 1.1] {
            r.record(System::Rfs, &Ok(v));
        }
        r.record(System::Kernel, &Ok(1.0));
        r.record(System::Host, &Err(anyhow::anyhow!("boom")));
        r.finish();
        let rfs = &r.systems[&System::Rfs];
        assert_eq!(rfs.median, Some(1.1));
        assert!((rfs.ratio.unwrap() - 1.1).abs() < 1e-9);
        assert_eq!(r.target_met, Some(true));
        let t = table(&[r], &System::ALL);
        assert!(t.contains("1.10 (1.10×)"), "{t}");
        assert!(t.contains("| error |"), "{t}");
    }
}
