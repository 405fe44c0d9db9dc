//! Graph API versions and the last day each is available (reference §5), and the finding for
//! `GRAPH_API_VERSION`. Dates are `time` calendar dates, in UTC.

use time::macros::date;
use time::{Date, OffsetDateTime};

use super::findings::Finding;

/// The version `GRAPH_API_VERSION` defaults to and fixes recommend.
pub const RECOMMENDED_GRAPH_VERSION: &str = "v25.0";

/// A version ending within this many days is reported with a warning.
pub const VERSION_WARNING_DAYS: i64 = 90;

/// Major versions and their last day; `None`: no date announced yet.
pub const GRAPH_VERSIONS: &[(u32, Option<Date>)] = &[
    (26, None),
    (25, Some(date!(2028 - 07 - 29))),
    (24, Some(date!(2028 - 02 - 18))),
    (23, Some(date!(2027 - 10 - 08))),
    (22, Some(date!(2027 - 05 - 20))),
    (21, Some(date!(2027 - 01 - 21))),
    (20, Some(date!(2026 - 09 - 24))),
    (19, Some(date!(2026 - 05 - 21))),
    (18, Some(date!(2026 - 01 - 26))),
    (17, Some(date!(2025 - 09 - 12))),
];

/// Today in UTC.
pub fn today() -> Date {
    OffsetDateTime::now_utc().date()
}

/// Whole days from `today` to `day` (negative when `day` is past).
pub fn days_until(day: Date, today: Date) -> i64 {
    (day - today).whole_days()
}

/// What is known about a Graph API version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionStatus {
    /// Available until this day, inclusive.
    Until(Date),
    /// Released, no end date announced.
    NoEndDate,
    /// Older than the table: long gone.
    Ancient,
    Unknown,
}

pub fn graph_version_status(version: &str) -> VersionStatus {
    let Some((major, minor)) = version
        .trim()
        .strip_prefix('v')
        .and_then(|v| v.split_once('.'))
    else {
        return VersionStatus::Unknown;
    };
    let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
        return VersionStatus::Unknown;
    };
    let oldest = GRAPH_VERSIONS.iter().map(|(m, _)| *m).min().unwrap_or(0);
    if major < oldest {
        return VersionStatus::Ancient;
    }
    if minor != 0 {
        return VersionStatus::Unknown;
    }
    match GRAPH_VERSIONS.iter().find(|(m, _)| *m == major) {
        Some((_, Some(until))) => VersionStatus::Until(*until),
        Some((_, None)) => VersionStatus::NoEndDate,
        None => VersionStatus::Unknown,
    }
}

/// `GRAPH_API_VERSION` against the table.
pub fn graph_version_finding(version: &str, today: Date) -> Finding {
    let fix = format!("set GRAPH_API_VERSION={RECOMMENDED_GRAPH_VERSION} (the default)");
    match graph_version_status(version) {
        VersionStatus::Until(until) if today > until => Finding::fail(
            format!(
                "GRAPH_API_VERSION={version} expired on {until}: Meta may reject calls or \
                 upgrade them silently"
            ),
            fix,
        ),
        VersionStatus::Until(until) if days_until(until, today) <= VERSION_WARNING_DAYS => {
            Finding::pass(format!(
                "GRAPH_API_VERSION={version} is available until {until} — warning: that is in {} \
                 days; move to {RECOMMENDED_GRAPH_VERSION}",
                days_until(until, today)
            ))
        }
        VersionStatus::Until(until) => Finding::pass(format!(
            "GRAPH_API_VERSION={version} is available until {until}"
        )),
        VersionStatus::NoEndDate => Finding::pass(format!(
            "GRAPH_API_VERSION={version} is current (no end date announced yet)"
        )),
        VersionStatus::Ancient => Finding::fail(
            format!(
                "GRAPH_API_VERSION={version} expired long ago (every version before v17.0 has \
                 ended)"
            ),
            fix,
        ),
        VersionStatus::Unknown => Finding::fail(
            format!(
                "GRAPH_API_VERSION={version} is not a Graph API version this doctor knows \
                 (v17.0 … v26.0)"
            ),
            fix,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    #[test]
    fn dates_print_as_iso_days() {
        assert_eq!(date!(2028 - 02 - 29).to_string(), "2028-02-29");
        assert_eq!(date!(2027 - 01 - 05).to_string(), "2027-01-05");
        assert_eq!(days_until(date!(2027 - 01 - 21), date!(2026 - 11 - 24)), 58);
        assert_eq!(days_until(date!(2026 - 01 - 26), date!(2026 - 01 - 27)), -1);
        // The table is newest first, without gaps.
        for pair in GRAPH_VERSIONS.windows(2) {
            assert_eq!(pair[0].0, pair[1].0 + 1);
        }
    }

    #[test]
    fn graph_versions_against_the_table() {
        let today = date!(2026 - 11 - 24);
        let f = graph_version_finding("v25.0", today);
        assert!(f.ok && f.text.contains("2028-07-29") && !f.text.contains("warning"));
        let f = graph_version_finding("v26.0", today);
        assert!(f.ok && f.text.contains("no end date"), "{f:?}");
        // v18.0 ended on 2026-01-26.
        let f = graph_version_finding("v18.0", today);
        assert!(!f.ok && f.text.contains("expired on 2026-01-26"), "{f:?}");
        assert!(f.fix.unwrap().contains("GRAPH_API_VERSION=v25.0"));
        let f = graph_version_finding("v20.0", today);
        assert!(!f.ok, "v20.0 ended 2026-09-24");
        // v21.0 ends 2027-01-21: 58 days later, a warning but still fine.
        let f = graph_version_finding("v21.0", today);
        assert!(
            f.ok && f.text.contains("warning") && f.text.contains("58 days"),
            "{f:?}"
        );
        // The last day itself still works; the day after does not.
        assert!(graph_version_finding("v18.0", date!(2026 - 01 - 26)).ok);
        assert!(!graph_version_finding("v18.0", date!(2026 - 01 - 27)).ok);
        // 91 days before the end: no warning.
        let f = graph_version_finding("v22.0", date!(2027 - 05 - 20) - Duration::days(91));
        assert!(f.ok && !f.text.contains("warning"));
        let f = graph_version_finding("v22.0", date!(2027 - 05 - 20) - Duration::days(90));
        assert!(f.ok && f.text.contains("warning"));
        // Older than the table, unknown, malformed.
        let f = graph_version_finding("v2.6", today);
        assert!(!f.ok && f.text.contains("long ago"));
        for v in ["v27.0", "v25.1", "latest", "v99.0"] {
            let f = graph_version_finding(v, today);
            assert!(!f.ok && f.fix.is_some(), "{v}: {f:?}");
        }
        assert_eq!(graph_version_status("v99.0"), VersionStatus::Unknown);
        assert_eq!(graph_version_status("v16.0"), VersionStatus::Ancient);
    }
}
