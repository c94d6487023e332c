//! Raw `*Config` → validated [`Plan`]. The [`Validator`] collects every problem as a
//! [`PlanIssue`] at the line of the key it is about (found in a `toml_edit` document of the
//! same text) instead of stopping at the first. One file per section of the plan:
//! `repository` (with the rule every password source follows), `objectives`,
//! `destinations`, `jobs` (names, schedules, hooks) and `sources` (each source kind's keys),
//! `retention`, `drill`. What the sections share (key paths, lines, durations, cron
//! schedules, relative paths) is here.

mod destinations;
mod drill;
mod jobs;
mod notify;
mod objectives;
mod repository;
mod retention;
mod schedule;
mod sets;
mod slo;
mod sources;
mod verify;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::model::Plan;
use super::raw::PlanConfig;
use super::{PlanError, PlanIssue};

/// A segment of a key path inside the document.
#[derive(Clone, Copy)]
enum Seg<'a> {
    K(&'a str),
    I(usize),
}

/// Turns a raw plan into a [`Plan`], collecting a [`PlanIssue`] for every problem.
pub(super) struct Validator<'a> {
    file: PathBuf,
    base: PathBuf,
    text: &'a str,
    doc: Option<toml_edit::ImDocument<String>>,
    pub(super) issues: Vec<PlanIssue>,
}

impl<'a> Validator<'a> {
    pub(super) fn new(file: &Path, text: &'a str) -> Self {
        Validator {
            file: file.to_path_buf(),
            base: file.parent().map(Path::to_path_buf).unwrap_or_default(),
            text,
            doc: toml_edit::ImDocument::parse(text.to_string()).ok(),
            issues: Vec::new(),
        }
    }

    pub(super) fn into_error(self) -> PlanError {
        PlanError {
            file: self.file,
            issues: self.issues,
        }
    }

    fn line_at(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    /// The line where `key` is written inside `span` (serde reports unknown keys of tagged
    /// tables with the table's span), else the span's first line.
    pub(super) fn key_line_within(&self, key: &str, span: std::ops::Range<usize>) -> usize {
        let end = span.end.min(self.text.len());
        let start = span.start.min(end);
        let mut offset = start;
        for l in self.text[start..end].split_inclusive('\n') {
            let t = l.trim_start();
            if t.strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
            {
                return self.line_at(offset);
            }
            offset += l.len();
        }
        self.line_at(span.start)
    }

    /// The dotted key written on the line at byte `offset` (`objectives.rpo` for `rpo = -5`
    /// under `[objectives]`), for errors serde reports with a span but no key name.
    pub(super) fn key_at(&self, offset: usize) -> Option<String> {
        let offset = offset.min(self.text.len());
        let line_start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line = self.text[line_start..].lines().next().unwrap_or("");
        let (key, _) = line.split_once('=')?;
        let key = key.trim().trim_matches('"');
        if key.is_empty() || key.starts_with('[') || key.contains(char::is_whitespace) {
            return None;
        }
        let table = self.text[..line_start]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|h| h.trim_matches(|c| c == '[' || c == ']').trim().to_string());
        Some(match table {
            Some(t) if !t.is_empty() => format!("{t}.{key}"),
            _ => key.to_string(),
        })
    }

    /// The line of the deepest part of `path` found in the document.
    fn line_of(&self, path: &[Seg]) -> usize {
        let Some(doc) = &self.doc else { return 0 };
        let mut item = doc.as_item();
        let mut best = 1;
        for seg in path {
            let (next, key_span) = match *seg {
                Seg::K(k) => {
                    let kv = item.as_table_like().and_then(|t| t.get_key_value(k));
                    (kv.map(|(_, v)| v), kv.and_then(|(key, _)| key.span()))
                }
                Seg::I(i) => (item.get(i), None),
            };
            let Some(next) = next else { break };
            if let Some(s) = key_span.or_else(|| next.span()) {
                best = self.line_at(s.start);
            }
            item = next;
        }
        best
    }

    fn issue(&mut self, path: &[Seg], problem: impl Into<String>, fix: impl Into<String>) {
        let key = path
            .iter()
            .map(|s| match s {
                Seg::K(k) => format!(".{k}"),
                Seg::I(i) => format!("[{i}]"),
            })
            .collect::<String>()
            .trim_start_matches('.')
            .to_string();
        self.issues.push(PlanIssue {
            file: self.file.clone(),
            line: self.line_of(path),
            key,
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn duration(&mut self, path: &[Seg], s: &str) -> Option<Duration> {
        match humantime::parse_duration(s) {
            Ok(d) if d > Duration::ZERO => Some(d),
            Ok(_) => {
                self.issue(
                    path,
                    "a zero duration",
                    "give a positive duration such as \"30m\" or \"6h\"",
                );
                None
            }
            Err(e) => {
                self.issue(
                    path,
                    format!("{s:?} is not a duration ({e})"),
                    "write a duration such as \"30m\", \"6h\" or \"1day\"",
                );
                None
            }
        }
    }

    fn schedule(&mut self, path: &[Seg], expr: &str) -> Option<cron::Schedule> {
        if let Err(problem) = check_cron_ranges(expr) {
            self.issue(
                path,
                format!("{expr:?}: {problem}"),
                "minute 0–59, hour 0–23, day 1–31, month 1–12, weekday 0–7 (0 and 7 = Sunday)",
            );
            return None;
        }
        match parse_cron(expr) {
            Ok(s) => Some(s),
            Err(e) => {
                let e = e
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                self.issue(
                    path,
                    format!("{expr:?} is not a cron expression ({e})"),
                    "use 5 fields \"min hour day month weekday\" (e.g. \"30 2 * * *\") or 6 with seconds first",
                );
                None
            }
        }
    }

    /// Validates every section, always in this order (the order issues are reported in).
    pub(super) fn plan(&mut self, raw: PlanConfig) -> Plan {
        let name = match raw.name {
            Some(n) if !valid_name(&n) => {
                self.issue(
                    &[Seg::K("name")],
                    format!("{n:?} is not a valid plan name"),
                    "use letters, digits, '-', '_' and '.'",
                );
                n
            }
            Some(n) => n,
            None => self
                .file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "plan".into()),
        };
        let password = self.repository(raw.repository);
        let objectives = self.objectives(raw.objectives);
        let (destinations, min_regions) = self.destinations(raw.destinations, raw.min_regions);
        let jobs = self.jobs(raw.jobs);
        let retention = raw.retention.map(|r| self.retention(r));
        let drill = raw.drill.map(|d| self.drill(d, &jobs));
        let schedule = self.schedule_section(raw.schedule.unwrap_or_default());
        let verify = raw.verify.and_then(|v| self.verify(v));
        let notify = raw.notify.map(|n| self.notify(n));
        let sets = self.sets(raw.sets, &jobs, drill.as_ref().map(|d| d.environment));

        Plan {
            name,
            file: self.file.clone(),
            description: raw.description,
            password,
            objectives,
            destinations,
            min_regions,
            jobs,
            retention,
            drill,
            schedule,
            verify,
            notify,
            sets,
        }
    }
}

/// Checks the numbers of a 5-field cron expression against each field's range, so the
/// message names the field and its range (the `cron` crate's own messages are off by one,
/// e.g. "minutes must be less than 59" for 60). Other forms are left to the crate.
pub fn check_cron_ranges(expr: &str) -> Result<(), String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != 5 {
        return Ok(());
    }
    const RANGES: [(&str, u32, u32); 5] = [
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day of month", 1, 31),
        ("month", 1, 12),
        ("weekday", 0, 7),
    ];
    for (field, (name, lo, hi)) in fields.iter().zip(RANGES) {
        for part in field.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (part, None),
            };
            if let Some(step) = step {
                if step.parse::<u32>().is_ok_and(|n| n == 0) {
                    return Err(format!("the {name} step /0 never advances"));
                }
            }
            for n in range.split('-') {
                let Ok(v) = n.parse::<u32>() else { continue };
                if v < lo || v > hi {
                    return Err(format!("{name} {v} is out of range ({lo}–{hi})"));
                }
            }
        }
    }
    Ok(())
}

/// Parses a cron expression. Five fields are classic cron (`min hour day month weekday`,
/// weekday 0–7 with 0 and 7 = Sunday) and get a `0` seconds field; six or seven fields are
/// passed to the `cron` crate as they are (its weekdays are 1–7 with 1 = Sunday, so numeric
/// weekdays of 5-field expressions are translated to names first).
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, cron::error::Error> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != 5 {
        return cron::Schedule::from_str(expr);
    }
    const DAYS: [&str; 8] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let mut dow = String::new();
    let mut after_slash = false;
    let mut digits = String::new();
    let flush = |digits: &mut String, dow: &mut String, after_slash: bool| {
        if digits.is_empty() {
            return;
        }
        match digits.parse::<usize>() {
            Ok(n) if n < DAYS.len() && !after_slash => dow.push_str(DAYS[n]),
            _ => dow.push_str(digits),
        }
        digits.clear();
    };
    for ch in fields[4].chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        flush(&mut digits, &mut dow, after_slash);
        after_slash = ch == '/';
        dow.push(ch);
    }
    flush(&mut digits, &mut dow, after_slash);
    cron::Schedule::from_str(&format!(
        "0 {} {} {} {} {dow}",
        fields[0], fields[1], fields[2], fields[3]
    ))
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 100
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}
