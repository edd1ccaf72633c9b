//! A per-call-site rate limit for log messages. Many warnings are the guest's doing (a BAR
//! moved over RAM, an MSI-X entry with a bogus address, a malformed config access): a
//! hostile or broken guest can trigger them on every exit. Each call site may log
//! [`BURST`] messages per [`WINDOW`]; the rest are counted, and the count is reported (with
//! the last message held back) when the site logs again in a later window or when the
//! logger is flushed at exit. The state is one entry per call site, so it stays bounded
//! however long the flood lasts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Messages a call site may log per window.
pub const BURST: u32 = 10;
/// Length of a window.
pub const WINDOW: Duration = Duration::from_secs(30);

/// A call site: module path (or target) and line.
pub type Site = (String, u32);

/// What to do with one message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; first report `held_back` messages of this site suppressed since it last
    /// logged (the last of them is `last`).
    Pass {
        /// Messages suppressed in the site's previous window.
        held_back: u64,
        /// The last suppressed message, if any.
        last: Option<String>,
    },
    /// Drop it (counted).
    Suppress,
}

#[derive(Debug)]
struct SiteState {
    window_start: Instant,
    passed: u32,
    suppressed: u64,
    last: Option<String>,
}

/// Per-site counters.
#[derive(Debug)]
pub struct RateLimiter {
    burst: u32,
    window: Duration,
    sites: HashMap<Site, SiteState>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new(BURST, WINDOW)
    }
}

impl RateLimiter {
    /// `burst` messages per `window` and call site.
    pub fn new(burst: u32, window: Duration) -> Self {
        Self {
            burst,
            window,
            sites: HashMap::new(),
        }
    }

    /// Decides about one message of `site` at `now`; `message` renders it (only called when
    /// it is suppressed, to remember the last one).
    pub fn check(&mut self, site: Site, now: Instant, message: impl FnOnce() -> String) -> Verdict {
        let state = self.sites.entry(site).or_insert(SiteState {
            window_start: now,
            passed: 0,
            suppressed: 0,
            last: None,
        });
        let mut held_back = 0;
        let mut last = None;
        if now.saturating_duration_since(state.window_start) >= self.window {
            held_back = std::mem::take(&mut state.suppressed);
            last = state.last.take();
            state.window_start = now;
            state.passed = 0;
        }
        if state.passed < self.burst {
            state.passed += 1;
            Verdict::Pass { held_back, last }
        } else {
            // Only a message dropped in the current window gets here, so nothing taken
            // above is lost.
            state.suppressed += 1;
            state.last = Some(message());
            Verdict::Suppress
        }
    }

    /// The sites with suppressed messages not yet reported: (site, count, last message),
    /// in site order; their counts are reset.
    pub fn take_suppressed(&mut self) -> Vec<(Site, u64, String)> {
        let mut out: Vec<(Site, u64, String)> = self
            .sites
            .iter_mut()
            .filter(|(_, s)| s.suppressed > 0)
            .map(|(site, s)| {
                let n = std::mem::take(&mut s.suppressed);
                (site.clone(), n, s.last.take().unwrap_or_default())
            })
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(line: u32) -> Site {
        ("devices::vfio::device".into(), line)
    }

    fn pass(held_back: u64, last: Option<&str>) -> Verdict {
        Verdict::Pass {
            held_back,
            last: last.map(String::from),
        }
    }

    #[test]
    fn burst_then_suppressed_then_reported_in_the_next_window() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(3, Duration::from_secs(10));
        for i in 0..3 {
            assert_eq!(r.check(site(1), t0, || format!("m{i}")), pass(0, None));
        }
        for i in 3..1000 {
            let at = t0 + Duration::from_millis(i);
            assert_eq!(r.check(site(1), at, || format!("m{i}")), Verdict::Suppress);
        }
        // Another site has its own budget.
        assert_eq!(r.check(site(2), t0, || "x".into()), pass(0, None));
        // The next window reports what was held back, with the last message.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            r.check(site(1), later, || "n".into()),
            pass(997, Some("m999"))
        );
        assert_eq!(r.check(site(1), later, || "n".into()), pass(0, None));
        assert!(r.take_suppressed().is_empty());
    }

    #[test]
    fn flush_reports_and_resets_counts() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(1, Duration::from_secs(10));
        r.check(site(7), t0, || "a".into());
        r.check(site(7), t0, || "b".into());
        r.check(site(7), t0, || "c".into());
        r.check(site(5), t0, || "d".into());
        assert_eq!(r.take_suppressed(), vec![(site(7), 2, "c".to_string())]);
        assert!(r.take_suppressed().is_empty());
        // Already reported: the next window does not report them again.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(r.check(site(7), later, || "e".into()), pass(0, None));
    }

    #[test]
    fn state_is_one_entry_per_site() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(2, Duration::from_secs(10));
        for i in 0..100_000u64 {
            r.check(site((i % 4) as u32), t0, || String::from("flood"));
        }
        assert_eq!(r.sites.len(), 4);
        let held: u64 = r.take_suppressed().iter().map(|(_, n, _)| n).sum();
        assert_eq!(held, 100_000 - 4 * 2);
    }
}
