//! Where the host's files are ([`HostRoot`]) and small readers for sysfs/procfs files.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::HostError;

/// Default place of the bind state file, relative to the root.
pub const STATE_FILE: &str = "/run/conduit/host-bind.json";

/// The host as seen through a path prefix: `/` on a real host, a temporary directory holding
/// `sys/`, `proc/`, `dev/`, ... in tests.
#[derive(Debug, Clone)]
pub struct HostRoot {
    prefix: PathBuf,
    state_file: PathBuf,
}

impl HostRoot {
    /// The real host (`/`), state file in `/run/conduit/host-bind.json`.
    pub fn system() -> Self {
        Self::at("/")
    }

    /// A host tree under `prefix`; the state file is `prefix/run/conduit/host-bind.json`.
    pub fn at(prefix: impl Into<PathBuf>) -> Self {
        let prefix = prefix.into();
        let state_file = join(&prefix, STATE_FILE);
        HostRoot { prefix, state_file }
    }

    /// Uses another state file.
    pub fn with_state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_file = path.into();
        self
    }

    /// The prefix.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// The host path `abs` (e.g. `/sys/bus/pci/devices`) under the prefix.
    pub fn path(&self, abs: &str) -> PathBuf {
        join(&self.prefix, abs)
    }

    /// The bind state file.
    pub fn state_file(&self) -> &Path {
        &self.state_file
    }

    /// `/sys/bus/pci/devices/ADDRESS`.
    pub fn pci_device(&self, address: &str) -> PathBuf {
        self.path("/sys/bus/pci/devices").join(address)
    }

    /// `/sys/bus/pci/drivers/DRIVER`.
    pub fn pci_driver(&self, driver: &str) -> PathBuf {
        self.path("/sys/bus/pci/drivers").join(driver)
    }
}

fn join(prefix: &Path, abs: &str) -> PathBuf {
    prefix.join(abs.trim_start_matches('/'))
}

/// Reads a file, trimmed; `None` when it does not exist.
pub fn read_opt(path: &Path) -> Result<Option<String>, HostError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(HostError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads a file that must exist, trimmed.
pub fn read(path: &Path) -> Result<String, HostError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| HostError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// The last component of a symlink's target (`driver` -> `nvme`); `None` when there is no link.
pub fn link_name(path: &Path) -> Result<Option<String>, HostError> {
    match fs::read_link(path) {
        Ok(t) => Ok(t.file_name().map(|n| n.to_string_lossy().into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(HostError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Names in a directory, sorted; empty when it does not exist.
pub fn list_dir(path: &Path) -> Result<Vec<String>, HostError> {
    let rd = match fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(HostError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| HostError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Whether a path exists (a dangling symlink counts as existing).
pub fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

/// Parses `0x10de` / `10de` as hex.
pub fn parse_hex(path: &Path, s: &str, what: &'static str) -> Result<u64, HostError> {
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u64::from_str_radix(t, 16).map_err(|_| HostError::Parse {
        path: path.to_path_buf(),
        content: s.to_string(),
        what,
    })
}

/// Normalises a PCI address to `dddd:bb:dd.f` (lower case; domain 0000 when omitted).
pub fn normalize_address(s: &str) -> Result<String, HostError> {
    let bad = || HostError::BadAddress(s.to_string());
    let t = s.trim().to_ascii_lowercase();
    let parts: Vec<&str> = t.split(':').collect();
    let (domain, bus, devfn) = match parts.as_slice() {
        [b, df] => ("0000", *b, *df),
        [d, b, df] => (*d, *b, *df),
        _ => return Err(bad()),
    };
    let (dev, func) = devfn.split_once('.').ok_or_else(bad)?;
    let hex = |x: &str, max_len: usize| {
        !x.is_empty() && x.len() <= max_len && x.chars().all(|c| c.is_ascii_hexdigit())
    };
    if !hex(domain, 4) || !hex(bus, 2) || !hex(dev, 2) || func.len() != 1 || !hex(func, 1) {
        return Err(bad());
    }
    let d = u32::from_str_radix(domain, 16).map_err(|_| bad())?;
    let b = u32::from_str_radix(bus, 16).map_err(|_| bad())?;
    let dv = u32::from_str_radix(dev, 16).map_err(|_| bad())?;
    let f = u32::from_str_radix(func, 16).map_err(|_| bad())?;
    if dv > 0x1f || f > 7 {
        return Err(bad());
    }
    Ok(format!("{d:04x}:{b:02x}:{dv:02x}.{f:x}"))
}

/// A PCI `vendor:device` id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciId {
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
}

impl PciId {
    /// Parses `10de:2335`.
    pub fn parse(s: &str) -> Result<PciId, HostError> {
        let bad = || HostError::BadId(s.to_string());
        let (v, d) = s.trim().split_once(':').ok_or_else(bad)?;
        let ok =
            |x: &str| !x.is_empty() && x.len() <= 4 && x.chars().all(|c| c.is_ascii_hexdigit());
        if !ok(v) || !ok(d) {
            return Err(bad());
        }
        Ok(PciId {
            vendor: u16::from_str_radix(v, 16).map_err(|_| bad())?,
            device: u16::from_str_radix(d, 16).map_err(|_| bad())?,
        })
    }
}

impl std::fmt::Display for PciId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04x}:{:04x}", self.vendor, self.device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_normalise() {
        assert_eq!(normalize_address("01:00.0").unwrap(), "0000:01:00.0");
        assert_eq!(normalize_address("0000:AF:1f.7").unwrap(), "0000:af:1f.7");
        assert_eq!(normalize_address("10000:01:00.0").ok(), None);
        assert_eq!(normalize_address("01:20.0").ok(), None);
        assert_eq!(normalize_address("01:00.8").ok(), None);
        assert_eq!(normalize_address("10de:2335").ok(), None);
        assert_eq!(normalize_address("nvme0").ok(), None);
    }

    #[test]
    fn ids_parse() {
        let id = PciId::parse("10DE:2335").unwrap();
        assert_eq!((id.vendor, id.device), (0x10de, 0x2335));
        assert_eq!(id.to_string(), "10de:2335");
        assert!(PciId::parse("10de").is_err());
        assert!(PciId::parse("10de:23350").is_err());
        assert!(PciId::parse("0000:01:00.0").is_err());
    }

    #[test]
    fn root_paths() {
        let r = HostRoot::at("/tmp/x");
        assert_eq!(
            r.path("/sys/class/iommu"),
            PathBuf::from("/tmp/x/sys/class/iommu")
        );
        assert_eq!(
            r.state_file(),
            Path::new("/tmp/x/run/conduit/host-bind.json")
        );
        assert_eq!(
            HostRoot::system().pci_device("0000:00:01.0"),
            PathBuf::from("/sys/bus/pci/devices/0000:00:01.0")
        );
    }
}
