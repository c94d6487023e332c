//! The keep rules of `forget`, as a pure function: which snapshots of one group (a plan job,
//! or host + paths for ad-hoc backups) a [`Policy`] keeps, and why. No I/O, no clock: the
//! caller passes the snapshots, the time zone the calendar buckets are counted in, and the
//! snapshots lifeboat's own rules protect (the newest with a passed drill per region, the ones
//! a running drill restores).
//!
//! The counting rules are restic's (`forget`): snapshots are taken newest first; `keep_last`
//! keeps the newest N; each calendar rule (`hourly` … `yearly`) keeps the newest snapshot of
//! each of the newest N hours/days/ISO weeks/months/years that have one, and when the rule has
//! counts left after the oldest bucket it also keeps the oldest snapshot (the longest history
//! those counts allow); `keep_within` keeps every snapshot newer than (newest snapshot's time −
//! the duration); `keep_tags` keeps every snapshot carrying one of the tags. A snapshot kept by
//! several rules is kept once with every reason. Snapshots with equal times are ordered by id
//! (the greater id counts as newer), so the outcome never depends on listing order.
//!
//! Order is the manifest's `time` only, never the id, a name or a source position (an LSN
//! that went back after `pg_upgrade`): see `docs/format.md`.
//!
//! Two departures from restic, both about snapshots an attacker can add but not delete
//! (RELIABILITY T16), chosen by [`When`]: a snapshot dated more than [`FUTURE_TOLERANCE`]
//! after the store's current time is kept ([`Reason::Future`]) and takes no place in any
//! count, so forgeries dated ahead cannot push real snapshots out; and for an append-only
//! repository `keep_within` counts back from the store's current time instead of from the
//! newest snapshot, so no forged date can move its window.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use serde::Serialize;

use crate::ids::SnapshotId;

/// What to keep. `None` (or 0) turns a rule off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    #[serde(with = "humantime_opt")]
    pub keep_within: Option<Duration>,
    pub keep_tags: Vec<String>,
}

mod humantime_opt {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}

impl Policy {
    /// The count rules set (`keep-last`, `keep-hourly`, …) by their flag names: rules a
    /// writer who can add snapshots fills with forgeries.
    pub fn count_rules(&self) -> Vec<&'static str> {
        [
            ("keep-last", self.keep_last),
            ("keep-hourly", self.keep_hourly),
            ("keep-daily", self.keep_daily),
            ("keep-weekly", self.keep_weekly),
            ("keep-monthly", self.keep_monthly),
            ("keep-yearly", self.keep_yearly),
        ]
        .into_iter()
        .filter(|(_, n)| n.unwrap_or(0) > 0)
        .map(|(name, _)| name)
        .collect()
    }

    /// True when no rule is set: such a policy would remove everything, and is refused.
    pub fn is_empty(&self) -> bool {
        let on = |n: Option<u32>| n.unwrap_or(0) > 0;
        !(on(self.keep_last)
            || on(self.keep_hourly)
            || on(self.keep_daily)
            || on(self.keep_weekly)
            || on(self.keep_monthly)
            || on(self.keep_yearly)
            || self.keep_within.is_some_and(|d| !d.is_zero())
            || !self.keep_tags.is_empty())
    }
}

/// One snapshot as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: SnapshotId,
    pub time: DateTime<Utc>,
    pub tags: Vec<String>,
}

/// Why a snapshot is kept. The calendar reasons carry the bucket (`2026-12-04`, `2026-W49`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Reason {
    Last,
    Hourly {
        bucket: String,
        oldest: bool,
    },
    Daily {
        bucket: String,
        oldest: bool,
    },
    Weekly {
        bucket: String,
        oldest: bool,
    },
    Monthly {
        bucket: String,
        oldest: bool,
    },
    Yearly {
        bucket: String,
        oldest: bool,
    },
    Within,
    Tag {
        tag: String,
    },
    /// Lifeboat's own rule: the newest snapshot of the job whose drill passed in `region`.
    DrillPassed {
        region: String,
    },
    /// Lifeboat's own rule: a drill is restoring it right now.
    DrillRunning,
    /// Dated after the store's current time (beyond [`FUTURE_TOLERANCE`]): kept, counted by
    /// no rule, reported as an anomaly.
    Future,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cal = |f: &mut std::fmt::Formatter<'_>, what: &str, bucket: &str, oldest: bool| {
            if oldest {
                write!(f, "oldest {what} {bucket}")
            } else {
                write!(f, "{what} {bucket}")
            }
        };
        match self {
            Reason::Last => f.write_str("last"),
            Reason::Hourly { bucket, oldest } => cal(f, "hourly", bucket, *oldest),
            Reason::Daily { bucket, oldest } => cal(f, "daily", bucket, *oldest),
            Reason::Weekly { bucket, oldest } => cal(f, "weekly", bucket, *oldest),
            Reason::Monthly { bucket, oldest } => cal(f, "monthly", bucket, *oldest),
            Reason::Yearly { bucket, oldest } => cal(f, "yearly", bucket, *oldest),
            Reason::Within => f.write_str("within"),
            Reason::Tag { tag } => write!(f, "tag {tag}"),
            Reason::DrillPassed { region } => write!(f, "newest passed drill ({region})"),
            Reason::DrillRunning => f.write_str("a running drill restores it"),
            Reason::Future => f.write_str("dated in the future (not counted)"),
        }
    }
}

/// The verdict on one snapshot: kept with its reasons, or removed (no reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub id: SnapshotId,
    pub time: DateTime<Utc>,
    pub reasons: Vec<Reason>,
}

impl Decision {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// Snapshots lifeboat's own rules protect whatever the policy says.
#[derive(Debug, Clone, Default)]
pub struct Protected {
    /// Per region, the newest snapshot of this group whose drill passed there.
    pub drill_passed: Vec<(String, SnapshotId)>,
    /// Snapshots a running drill is restoring.
    pub drill_running: Vec<SnapshotId>,
}

/// The calendar rules, in restic's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cal {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Cal {
    const ALL: [Cal; 5] = [
        Cal::Hourly,
        Cal::Daily,
        Cal::Weekly,
        Cal::Monthly,
        Cal::Yearly,
    ];

    fn count(self, p: &Policy) -> u32 {
        match self {
            Cal::Hourly => p.keep_hourly,
            Cal::Daily => p.keep_daily,
            Cal::Weekly => p.keep_weekly,
            Cal::Monthly => p.keep_monthly,
            Cal::Yearly => p.keep_yearly,
        }
        .unwrap_or(0)
    }

    /// The bucket a time falls in, in zone `tz`.
    fn bucket<Tz: TimeZone>(self, t: &DateTime<Utc>, tz: &Tz) -> String {
        let l = t.with_timezone(tz);
        match self {
            Cal::Hourly => format!(
                "{:04}-{:02}-{:02}T{:02}",
                l.year(),
                l.month(),
                l.day(),
                l.hour()
            ),
            Cal::Daily => format!("{:04}-{:02}-{:02}", l.year(), l.month(), l.day()),
            Cal::Weekly => {
                let w = l.iso_week();
                format!("{:04}-W{:02}", w.year(), w.week())
            }
            Cal::Monthly => format!("{:04}-{:02}", l.year(), l.month()),
            Cal::Yearly => format!("{:04}", l.year()),
        }
    }

    fn reason(self, bucket: String, oldest: bool) -> Reason {
        match self {
            Cal::Hourly => Reason::Hourly { bucket, oldest },
            Cal::Daily => Reason::Daily { bucket, oldest },
            Cal::Weekly => Reason::Weekly { bucket, oldest },
            Cal::Monthly => Reason::Monthly { bucket, oldest },
            Cal::Yearly => Reason::Yearly { bucket, oldest },
        }
    }
}

/// How far ahead of the store's current time a snapshot may be dated before it is taken for
/// forged or written by a host with a broken clock (the skew `prune` tolerates).
pub const FUTURE_TOLERANCE: Duration = crate::repo::clock::PRUNE_MAX_SKEW;

/// The time the rules are applied at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct When {
    /// The store's current time ([`crate::repo::Repository::now`]); `None`: unknown, no
    /// snapshot is taken for future-dated and `keep_within` counts from the newest.
    pub now: Option<DateTime<Utc>>,
    /// Append-only repository: `keep_within` counts back from `now`.
    pub within_from_now: bool,
}

impl When {
    /// Whether `t` is dated in the future (beyond [`FUTURE_TOLERANCE`]).
    pub fn is_future(&self, t: &DateTime<Utc>) -> bool {
        self.now.is_some_and(|now| {
            chrono::Duration::from_std(FUTURE_TOLERANCE)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .is_some_and(|limit| *t > limit)
        })
    }
}

/// Newest first; equal times by id, greater first.
pub fn sort_newest_first(c: &mut [Candidate]) {
    c.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
}

/// Applies `policy` and `protected` to one group's snapshots at `when`; the decisions come
/// newest first.
pub fn apply<Tz: TimeZone>(
    policy: &Policy,
    snapshots: &[Candidate],
    tz: &Tz,
    protected: &Protected,
    when: When,
) -> Vec<Decision> {
    let mut list = snapshots.to_vec();
    sort_newest_first(&mut list);
    // Future-dated snapshots are the newest by their dates: kept, and out of every count.
    let future = list.iter().take_while(|c| when.is_future(&c.time)).count();
    let mut out: Vec<Decision> = list
        .drain(..future)
        .map(|c| Decision {
            id: c.id,
            time: c.time,
            reasons: vec![Reason::Future],
        })
        .collect();
    let n = list.len();
    let latest = match (when.within_from_now, when.now) {
        (true, Some(now)) => Some(now),
        _ => list.first().map(|c| c.time),
    };
    let mut last_left = policy.keep_last.unwrap_or(0);
    let mut cal: Vec<(Cal, u32, Option<String>)> = Cal::ALL
        .iter()
        .map(|&c| (c, c.count(policy), None))
        .collect();
    let within_from = match (latest, policy.keep_within) {
        (Some(l), Some(d)) if !d.is_zero() => Some(
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| l.checked_sub_signed(d))
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        ),
        _ => None,
    };
    out.reserve(n);
    for (nr, cur) in list.iter().enumerate() {
        let mut reasons = Vec::new();
        for t in &policy.keep_tags {
            if cur.tags.iter().any(|x| x == t) {
                reasons.push(Reason::Tag { tag: t.clone() });
            }
        }
        if within_from.is_some_and(|from| cur.time > from) {
            reasons.push(Reason::Within);
        }
        if last_left > 0 {
            last_left -= 1;
            reasons.push(Reason::Last);
        }
        let is_oldest = nr + 1 == n;
        for (rule, left, last) in cal.iter_mut() {
            if *left == 0 {
                continue;
            }
            let val = rule.bucket(&cur.time, tz);
            let same = last.as_deref() == Some(val.as_str());
            if !same || is_oldest {
                *left -= 1;
                reasons.push(rule.reason(val.clone(), same));
                *last = Some(val);
            }
        }
        for (region, id) in &protected.drill_passed {
            if *id == cur.id {
                reasons.push(Reason::DrillPassed {
                    region: region.clone(),
                });
            }
        }
        if protected.drill_running.contains(&cur.id) {
            reasons.push(Reason::DrillRunning);
        }
        out.push(Decision {
            id: cur.id,
            time: cur.time,
            reasons,
        });
    }
    out
}

/// The purpose of the shared lock a drill holds while it restores snapshot `id`: `forget`
/// reads the live locks and keeps the snapshots they name.
pub fn drill_marker(id: &SnapshotId) -> String {
    format!("{DRILL_MARKER}{id}")
}

const DRILL_MARKER: &str = "drill restoring snapshot ";

/// The snapshot a lock's purpose says a drill is restoring, if it is such a marker.
pub fn parse_drill_marker(purpose: &str) -> Option<SnapshotId> {
    purpose.strip_prefix(DRILL_MARKER)?.parse().ok()
}

/// Groups snapshots by a key (plan job, or host + paths), keeping each group's order.
pub fn group_by<T, K: Eq + std::hash::Hash + Clone>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> K,
) -> Vec<(K, Vec<T>)> {
    let mut order: Vec<K> = Vec::new();
    let mut groups: HashMap<K, Vec<T>> = HashMap::new();
    for it in items {
        let k = key(&it);
        if !groups.contains_key(&k) {
            order.push(k.clone());
        }
        groups.entry(k).or_default().push(it);
    }
    order
        .into_iter()
        .map(|k| {
            let v = groups.remove(&k).expect("grouped");
            (k, v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashSet};

    fn id(n: u32) -> SnapshotId {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&n.to_be_bytes());
        SnapshotId::from_bytes(b)
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    fn kept(d: &[Decision]) -> Vec<SnapshotId> {
        d.iter().filter(|d| d.keep()).map(|d| d.id).collect()
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day_and_the_oldest_while_counts_are_left() {
        let snaps = vec![
            Candidate {
                id: id(1),
                time: at("2026-12-01T10:00:00Z"),
                tags: vec![],
            },
            Candidate {
                id: id(2),
                time: at("2026-12-01T18:00:00Z"),
                tags: vec![],
            },
            Candidate {
                id: id(3),
                time: at("2026-12-02T09:00:00Z"),
                tags: vec![],
            },
            Candidate {
                id: id(4),
                time: at("2026-12-02T21:00:00Z"),
                tags: vec!["keep".into()],
            },
            Candidate {
                id: id(5),
                time: at("2026-12-03T08:00:00Z"),
                tags: vec![],
            },
        ];
        let p = Policy {
            keep_daily: Some(2),
            ..Default::default()
        };
        let d = apply(&p, &snaps, &Utc, &Protected::default(), When::default());
        assert_eq!(kept(&d), vec![id(5), id(4)]);
        // five days asked, three exist: the oldest is kept too ("oldest daily")
        let p = Policy {
            keep_daily: Some(5),
            ..Default::default()
        };
        let d = apply(&p, &snaps, &Utc, &Protected::default(), When::default());
        assert_eq!(kept(&d), vec![id(5), id(4), id(2), id(1)]);
        assert_eq!(d[4].reasons[0].to_string(), "oldest daily 2026-12-01");
        // in UTC+10 the 2nd 21:00 is the 3rd 07:00: one day fewer
        let tz = FixedOffset::east_opt(10 * 3600).expect("offset");
        let p = Policy {
            keep_daily: Some(2),
            ..Default::default()
        };
        let d = apply(&p, &snaps, &tz, &Protected::default(), When::default());
        assert_eq!(kept(&d), vec![id(5), id(3)]);
        // tags, within and lifeboat's own rules add reasons, never remove
        let p = Policy {
            keep_last: Some(1),
            keep_within: Some(Duration::from_secs(12 * 3600)),
            keep_tags: vec!["keep".into()],
            ..Default::default()
        };
        let prot = Protected {
            drill_passed: vec![("eu".into(), id(1))],
            drill_running: vec![id(2)],
        };
        let d = apply(&p, &snaps, &Utc, &prot, When::default());
        assert_eq!(kept(&d), vec![id(5), id(4), id(2), id(1)]);
        assert_eq!(
            d[1].reasons,
            vec![Reason::Tag { tag: "keep".into() }, Reason::Within]
        );
        assert_eq!(d[3].reasons, vec![Reason::DrillRunning]);
        assert_eq!(d[4].reasons[0].to_string(), "newest passed drill (eu)");
    }

    #[test]
    fn future_dated_snapshots_are_kept_and_counted_by_no_rule() {
        let now = at("2026-12-05T12:00:00Z");
        let mut snaps: Vec<Candidate> = (1..=3)
            .map(|i| Candidate {
                id: id(i),
                time: now - chrono::Duration::hours(24 * (4 - i as i64)),
                tags: vec![],
            })
            .collect();
        // Four forgeries a day ahead, with ids that sort both sides of the real ones.
        for (k, n) in [(1, 0u32), (2, 9), (3, 100), (4, 7)] {
            snaps.push(Candidate {
                id: id(n),
                time: now + chrono::Duration::hours(24) + chrono::Duration::minutes(k),
                tags: vec![],
            });
        }
        let p = Policy {
            keep_last: Some(3),
            keep_daily: Some(2),
            ..Default::default()
        };
        let when = When {
            now: Some(now),
            within_from_now: false,
        };
        let d = apply(&p, &snaps, &Utc, &Protected::default(), when);
        assert_eq!(d.len(), 7);
        for real in 1..=3 {
            let row = d.iter().find(|x| x.id == id(real)).expect("decided");
            assert!(row.keep(), "real snapshot {real} removed: {d:?}");
            assert!(!row.reasons.contains(&Reason::Future));
        }
        assert_eq!(
            d.iter().filter(|x| x.reasons == [Reason::Future]).count(),
            4
        );
        // Without the store's time (restic's rules) the forgeries take every count.
        let d = apply(&p, &snaps, &Utc, &Protected::default(), When::default());
        let removed: Vec<SnapshotId> = d.iter().filter(|x| !x.keep()).map(|x| x.id).collect();
        assert!(
            removed.contains(&id(1)) && removed.contains(&id(2)),
            "{d:?}"
        );
        // Within the tolerance a snapshot is not "future".
        assert!(!when.is_future(&(now + chrono::Duration::minutes(4))));
        assert!(when.is_future(&(now + chrono::Duration::minutes(6))));
    }

    #[test]
    fn append_only_keep_within_counts_from_now_not_from_the_newest() {
        let now = at("2026-12-05T12:00:00Z");
        let snaps: Vec<Candidate> = (8..=10)
            .map(|days| Candidate {
                id: id(days),
                time: now - chrono::Duration::days(days as i64),
                tags: vec![],
            })
            .collect();
        let p = Policy {
            keep_within: Some(Duration::from_secs(5 * 86_400)),
            ..Default::default()
        };
        // restic: five days back from the newest (8 days old) keeps all three.
        let d = apply(&p, &snaps, &Utc, &Protected::default(), When::default());
        assert_eq!(kept(&d).len(), 3);
        // append-only: five days back from now keeps none (forget then refuses to empty it).
        let when = When {
            now: Some(now),
            within_from_now: true,
        };
        let d = apply(&p, &snaps, &Utc, &Protected::default(), when);
        assert!(kept(&d).is_empty());
        // ... and a snapshot forged a year ahead does not move that window.
        let mut forged = snaps.clone();
        forged.push(Candidate {
            id: id(99),
            time: now + chrono::Duration::days(365),
            tags: vec![],
        });
        let d = apply(&p, &forged, &Utc, &Protected::default(), when);
        assert_eq!(kept(&d), vec![id(99)]);
        assert_eq!(d[0].reasons, vec![Reason::Future]);
        let p = Policy {
            keep_within: Some(Duration::from_secs(9 * 86_400)),
            ..Default::default()
        };
        let d = apply(&p, &forged, &Utc, &Protected::default(), when);
        assert_eq!(kept(&d), vec![id(99), id(8)]);
    }

    /// The reference: written from the documented rules, bucket by bucket rather than
    /// snapshot by snapshot.
    fn reference<Tz: TimeZone>(p: &Policy, snaps: &[Candidate], tz: &Tz) -> BTreeSet<SnapshotId> {
        let mut list = snaps.to_vec();
        list.sort_by_key(|c| std::cmp::Reverse((c.time, c.id)));
        let mut keep = BTreeSet::new();
        let Some(newest) = list.first().cloned() else {
            return keep;
        };
        for c in list.iter().take(p.keep_last.unwrap_or(0) as usize) {
            keep.insert(c.id);
        }
        for rule in Cal::ALL {
            let n = rule.count(p) as usize;
            if n == 0 {
                continue;
            }
            // buckets newest first, each with its newest snapshot
            let mut buckets: Vec<(String, SnapshotId)> = Vec::new();
            for c in &list {
                let b = rule.bucket(&c.time, tz);
                if !buckets.iter().any(|(x, _)| *x == b) {
                    buckets.push((b, c.id));
                }
            }
            for (_, id) in buckets.iter().take(n) {
                keep.insert(*id);
            }
            if buckets.len() < n {
                keep.insert(list.last().expect("non-empty").id);
            }
        }
        if let Some(d) = p.keep_within.filter(|d| !d.is_zero()) {
            let from = newest.time - chrono::Duration::from_std(d).expect("small");
            keep.extend(list.iter().filter(|c| c.time > from).map(|c| c.id));
        }
        let tags: HashSet<&String> = p.keep_tags.iter().collect();
        keep.extend(
            list.iter()
                .filter(|c| c.tags.iter().any(|t| tags.contains(t)))
                .map(|c| c.id),
        );
        keep
    }

    fn timeline() -> impl Strategy<Value = Vec<Candidate>> {
        // Gaps from equal (0 s) through minutes, hours, days, to months; a start anywhere in
        // 2019–2029 so year and ISO-week edges come up.
        let gap = prop_oneof![
            Just(0i64),
            1i64..120,
            600i64..7_200,
            3_600i64..200_000,
            86_400i64..3_000_000,
            1_000_000i64..40_000_000,
        ];
        (
            1_546_300_800i64..1_861_920_000,
            prop::collection::vec((gap, 0u8..4), 0..60),
        )
            .prop_map(|(start, steps)| {
                let mut t = start;
                steps
                    .into_iter()
                    .enumerate()
                    .map(|(i, (g, tag))| {
                        t += g;
                        Candidate {
                            id: id(rand_id(i as u32)),
                            time: DateTime::from_timestamp(t, 0).expect("time"),
                            tags: match tag {
                                0 => vec!["monthly".into()],
                                _ => vec![],
                            },
                        }
                    })
                    .collect()
            })
    }

    /// Ids not in time order, so ties between equal times are really decided by id.
    fn rand_id(i: u32) -> u32 {
        i.wrapping_mul(2_654_435_761)
    }

    fn policy() -> impl Strategy<Value = Policy> {
        let count = prop_oneof![Just(None), Just(Some(0)), (1u32..8).prop_map(Some)];
        (
            count.clone(),
            count.clone(),
            count.clone(),
            count.clone(),
            count.clone(),
            count,
            prop_oneof![
                Just(None),
                (1u64..10_000_000).prop_map(|s| Some(Duration::from_secs(s)))
            ],
            any::<bool>(),
        )
            .prop_map(|(l, h, d, w, m, y, within, tag)| Policy {
                keep_last: l,
                keep_hourly: h,
                keep_daily: d,
                keep_weekly: w,
                keep_monthly: m,
                keep_yearly: y,
                keep_within: within,
                keep_tags: if tag { vec!["monthly".into()] } else { vec![] },
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn rules_match_the_reference(
            p in policy(),
            snaps in timeline(),
            offset_min in prop_oneof![Just(0i32), -720i32..=840],
            shuffle in any::<u64>(),
        ) {
            let tz = FixedOffset::east_opt(offset_min * 60).expect("offset");
            let mut input = snaps.clone();
            // listing order must not matter
            let len = input.len().max(1);
            input.rotate_left((shuffle as usize) % len);
            let d = apply(&p, &input, &tz, &Protected::default(), When::default());
            let got: BTreeSet<SnapshotId> = kept(&d).into_iter().collect();
            prop_assert_eq!(&got, &reference(&p, &snaps, &tz));
            // every snapshot has exactly one decision, newest first
            prop_assert_eq!(d.len(), snaps.len());
            prop_assert!(d.windows(2).all(|w| (w[0].time, w[0].id) > (w[1].time, w[1].id)));
            // a non-empty policy without tags never removes the newest snapshot
            if !p.is_empty() && p.keep_tags.is_empty() && !snaps.is_empty() {
                prop_assert!(d[0].keep());
            }
        }
    }
}
