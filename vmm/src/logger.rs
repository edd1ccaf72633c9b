//! A minimal stderr logger: `CONDUIT_LOG=error|warn|info|debug|trace` (default `warn`).

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger;

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
        if self.enabled(r.metadata()) {
            eprintln!(
                "conduit: {}: {}",
                r.level().as_str().to_lowercase(),
                r.args()
            );
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

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
