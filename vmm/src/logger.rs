//! A minimal stderr logger: `CONDUIT_LOG=error|warn|info|debug|trace` (default `warn`).
//! Warnings and errors are rate-limited per call site ([`crate::log_limit`]), because a
//! guest can trigger many of them at will; [`flush`] reports what is still held back.

use std::sync::Mutex;
use std::time::Instant;

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::log_limit::{RateLimiter, Verdict};

struct StderrLogger {
    limiter: Mutex<Option<RateLimiter>>,
}

fn print(level: Level, message: impl std::fmt::Display) {
    eprintln!("conduit: {}: {message}", level.as_str().to_lowercase());
}

impl Log for StderrLogger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        // Dependencies (vfio-ioctls, ...) speak only for errors unless tracing: their
        // warnings (e.g. an IRQ index a device lacks) are not the user's business.
        let ours = ["vmm", "devices", "pci", "boot", "conduit"]
            .iter()
            .any(|c| m.target() == *c || m.target().starts_with(&format!("{c}::")));
        m.level() <= log::max_level()
            && (ours || m.level() == Level::Error || log::max_level() == LevelFilter::Trace)
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        if r.level() > Level::Warn {
            print(r.level(), r.args());
            return;
        }
        let site = (
            r.module_path().unwrap_or(r.target()).to_string(),
            r.line().unwrap_or(0),
        );
        // Held while printing, so a report of held-back messages stays next to its site's
        // next message.
        let mut limiter = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        let limiter = limiter.get_or_insert_with(RateLimiter::default);
        match limiter.check(site, Instant::now(), || r.args().to_string()) {
            Verdict::Suppress => {}
            Verdict::Pass { held_back, last } => {
                if held_back > 0 {
                    print(
                        r.level(),
                        format_args!(
                            "{held_back} similar messages suppressed (rate limit), the last: {}",
                            last.unwrap_or_default()
                        ),
                    );
                }
                print(r.level(), r.args());
            }
        }
    }

    /// Reports the messages still held back by the rate limit.
    fn flush(&self) {
        let mut limiter = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        let Some(limiter) = limiter.as_mut() else {
            return;
        };
        for (_, count, last) in limiter.take_suppressed() {
            print(
                Level::Warn,
                format_args!("{count} similar messages suppressed (rate limit), the last: {last}"),
            );
        }
    }
}

static LOGGER: StderrLogger = StderrLogger {
    limiter: Mutex::new(None),
};

/// Installs the logger once; later calls do nothing.
pub fn init() {
    let level = std::env::var("CONDUIT_LOG")
        .ok()
        .and_then(|v| v.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::Warn);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

/// Reports what the rate limit still holds back (call before exiting).
pub fn flush() {
    log::logger().flush();
}
