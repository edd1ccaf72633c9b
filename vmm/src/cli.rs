//! Command-line front end.

/// Entry point of the `conduit` binary; returns the process exit status.
pub fn main() -> i32 {
    0
}
