//! Running `tests/rig/run` from a test (`tests/rig.rs`, `tests/hardware.rs`): its output, its
//! verdict line and the tail of the log it names.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// What one `tests/rig/run` printed and whether it exited 0.
pub struct RigRun {
    pub passed: bool,
    pub output: String,
}

impl RigRun {
    /// The `RIG-VERDICT` line(s) of the run.
    pub fn verdict(&self) -> String {
        self.output
            .lines()
            .filter(|l| l.contains("RIG-VERDICT"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `tests/rig/run` with `args`, this build's `conduit` as `CONDUIT_BIN`, and the extra
/// environment `env` (`None` removes a variable).
pub fn rig(args: &[&str], env: &[(&str, Option<&str>)]) -> RigRun {
    let mut cmd = Command::new(repo().join("tests/rig/run"));
    cmd.args(args)
        .current_dir(repo())
        .env("CONDUIT_BIN", env!("CARGO_BIN_EXE_conduit"))
        .env_remove("RIG_BREAK");
    for (key, value) in env {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start tests/rig/run: {e}"));
    RigRun {
        passed: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The last `lines` lines of the log that a run names with `rig: log: PATH`.
pub fn log_tail(output: &str, lines: usize) -> String {
    let Some(path) = output
        .lines()
        .find_map(|l| l.strip_prefix("rig: log: "))
        .map(PathBuf::from)
    else {
        return "(the run named no log)".into();
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            format!(
                "{} (last {} lines):\n{}",
                path.display(),
                all.len() - from,
                all[from..].join("\n")
            )
        }
        Err(e) => format!("cannot read {}: {e}", path.display()),
    }
}
