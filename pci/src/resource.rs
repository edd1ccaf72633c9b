//! The sysfs `resource` file of a PCI device (`/sys/bus/pci/devices/*/resource`): one line
//! per resource (BARs 0..=5, the ROM, then bridge windows), `start end flags` in hex.

use crate::error::Error;

/// Linux `IORESOURCE_IO`.
pub const IORESOURCE_IO: u64 = 0x100;
/// Linux `IORESOURCE_MEM`.
pub const IORESOURCE_MEM: u64 = 0x200;
/// Linux `IORESOURCE_PREFETCH`.
pub const IORESOURCE_PREFETCH: u64 = 0x2000;
/// Linux `IORESOURCE_MEM_64`.
pub const IORESOURCE_MEM_64: u64 = 0x10_0000;

/// One line of a sysfs `resource` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostResource {
    /// First address.
    pub start: u64,
    /// Last address (inclusive).
    pub end: u64,
    /// Linux resource flags (`IORESOURCE_*`; the low bits repeat the BAR's type bits).
    pub flags: u64,
}

impl HostResource {
    /// Size in bytes; 0 for an unused line (all zeros).
    pub fn size(&self) -> u64 {
        if self.flags == 0 && self.end == 0 {
            0
        } else {
            self.end.wrapping_sub(self.start).wrapping_add(1)
        }
    }

    /// An I/O port resource.
    pub fn is_io(&self) -> bool {
        self.flags & IORESOURCE_IO != 0
    }

    /// A memory resource.
    pub fn is_memory(&self) -> bool {
        self.flags & IORESOURCE_MEM != 0
    }

    /// A 64-bit memory BAR.
    pub fn is_64bit(&self) -> bool {
        self.flags & IORESOURCE_MEM_64 != 0
    }

    /// Prefetchable memory.
    pub fn prefetchable(&self) -> bool {
        self.flags & IORESOURCE_PREFETCH != 0
    }
}

fn hex(field: Option<&str>, line: usize, what: &str) -> Result<u64, Error> {
    let text = field.ok_or_else(|| Error::ResourceLine {
        line,
        reason: format!("missing {what}"),
    })?;
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    u64::from_str_radix(digits, 16).map_err(|e| Error::ResourceLine {
        line,
        reason: format!("{what} {text:?}: {e}"),
    })
}

/// Parses the text of a sysfs `resource` file; entry i is BAR i for i < 6, entry 6 the ROM.
pub fn parse_sysfs_resource(text: &str) -> Result<Vec<HostResource>, Error> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let line = i + 1;
            let mut fields = l.split_whitespace();
            let r = HostResource {
                start: hex(fields.next(), line, "start")?,
                end: hex(fields.next(), line, "end")?,
                flags: hex(fields.next(), line, "flags")?,
            };
            if fields.next().is_some() {
                return Err(Error::ResourceLine {
                    line,
                    reason: "more than three fields".into(),
                });
            }
            Ok(r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_flags() {
        let text = "0x0000000000001000 0x000000000000101f 0x0000000000040101\n\
                    0x0000000000000000 0x0000000000000000 0x0000000000000000\n";
        let r = parse_sysfs_resource(text).unwrap();
        assert_eq!(r.len(), 2);
        assert!(r[0].is_io() && !r[0].is_memory());
        assert_eq!(r[0].size(), 0x20);
        assert_eq!(r[1].size(), 0);
    }

    #[test]
    fn rejects_garbage_with_line_number() {
        let err = parse_sysfs_resource("0x0 0x1 0x200\n0x10 zz 0x200\n").unwrap_err();
        assert!(matches!(err, Error::ResourceLine { line: 2, .. }), "{err}");
        assert!(parse_sysfs_resource("0x0 0x1\n").is_err());
        assert!(parse_sysfs_resource("0x0 0x1 0x2 0x3\n").is_err());
    }
}
