//! What a VM is made of: the one description the CLI builds (and, later, the API accepts).

use std::path::PathBuf;

/// Where the guest's COM1 output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialMode {
    /// The VMM's stdout; host stdin feeds the guest.
    Stdio,
    /// Appended to a file.
    File(PathBuf),
    /// Discarded.
    Off,
}

/// What to do when the guest reboots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OnReboot {
    /// Stop the VMM (exit status 3).
    #[default]
    Exit,
    /// Rebuild the VM and boot it again.
    Restart,
}

/// What the guest runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestImage {
    /// A Linux kernel (bzImage or ELF vmlinux) with optional initramfs and command line.
    Linux {
        /// Kernel image.
        kernel: PathBuf,
        /// Initramfs image.
        initramfs: Option<PathBuf>,
        /// Kernel command line.
        cmdline: String,
    },
    /// Raw 16-bit real-mode code loaded at [`crate::vm::PAYLOAD_ADDR`] (tests, diagnostics):
    /// it runs on any KVM, including software ones that cannot boot Linux.
    RealModePayload(Vec<u8>),
}

/// A whole VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// What runs.
    pub guest: GuestImage,
    /// Number of vCPUs.
    pub cpus: u8,
    /// Guest RAM in bytes.
    pub memory_bytes: u64,
    /// Back guest RAM with 2 MiB hugepages.
    pub hugepages: bool,
    /// Console.
    pub serial: SerialMode,
    /// Reboot policy.
    pub on_reboot: OnReboot,
    /// Host PCI devices passed through (address or sysfs path), in guest slot order.
    pub devices: Vec<String>,
}

/// Default kernel command line: console on COM1, reboot (not hang) on panic.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";

/// Errors in a size such as `512M`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid size '{0}': use a number with an optional K, M, G or T suffix (e.g. 512M, 2G)")]
pub struct SizeError(pub String);

/// Parses `512M`, `2G`, `1024K`, `4096` (bytes) and the same with `iB`/`B` suffixes.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let err = || SizeError(s.to_string());
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(err()),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits.parse().map_err(|_| err())?;
    n.checked_mul(1u64 << shift).ok_or_else(err)
}

/// Parses `stdio`, `off` or `file=PATH`.
pub fn parse_serial(s: &str) -> Result<SerialMode, String> {
    match s {
        "stdio" => Ok(SerialMode::Stdio),
        "off" => Ok(SerialMode::Off),
        _ => match s.strip_prefix("file=") {
            Some(p) if !p.is_empty() => Ok(SerialMode::File(PathBuf::from(p))),
            _ => Err(format!(
                "invalid serial mode '{s}': use stdio, off or file=PATH"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn serial_modes() {
        assert_eq!(parse_serial("stdio"), Ok(SerialMode::Stdio));
        assert_eq!(parse_serial("off"), Ok(SerialMode::Off));
        assert_eq!(
            parse_serial("file=/tmp/x"),
            Ok(SerialMode::File("/tmp/x".into()))
        );
        assert!(parse_serial("file=").is_err());
        assert!(parse_serial("tty").is_err());
    }
}
