//! Read-only decoding of a raw config-space blob (e.g. read from a host device through
//! VFIO): the standard and extended capability lists, and BAR registers.
//!
//! The walkers never panic and always terminate: pointers outside the blob, below the
//! header, or revisiting an entry end the walk (with a warning).

use log::warn;

use crate::config_space::{
    BAR0, CAPABILITIES_POINTER, EXT_CAPABILITIES_START, STATUS, STATUS_CAP_LIST,
};
use crate::device::BarKind;

/// Power management capability id.
pub const CAP_ID_PM: u8 = 0x01;
/// MSI capability id.
pub const CAP_ID_MSI: u8 = 0x05;
/// Vendor-specific capability id.
pub const CAP_ID_VENDOR: u8 = 0x09;
/// PCI Express capability id.
pub const CAP_ID_PCIE: u8 = 0x10;
/// MSI-X capability id.
pub const CAP_ID_MSIX: u8 = 0x11;

/// Advanced error reporting extended capability id.
pub const EXT_CAP_ID_AER: u16 = 0x0001;
/// Device serial number extended capability id.
pub const EXT_CAP_ID_DSN: u16 = 0x0003;
/// Power budgeting extended capability id.
pub const EXT_CAP_ID_POWER_BUDGET: u16 = 0x0004;
/// Vendor-specific extended capability id.
pub const EXT_CAP_ID_VSEC: u16 = 0x000b;
/// Resizable BAR extended capability id.
pub const EXT_CAP_ID_REBAR: u16 = 0x0015;
/// Latency tolerance reporting extended capability id.
pub const EXT_CAP_ID_LTR: u16 = 0x0018;

/// One entry of the standard capability list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    /// Capability id.
    pub id: u8,
    /// Offset of its header in config space.
    pub offset: u8,
}

/// One entry of the extended capability list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtCapability {
    /// Extended capability id (0 = a null entry, e.g. one a VMM hid).
    pub id: u16,
    /// Capability version.
    pub version: u8,
    /// Offset of its header.
    pub offset: u16,
    /// Next pointer (0 ends the list).
    pub next: u16,
}

impl ExtCapability {
    /// Decodes a header found at `offset`.
    pub fn from_header(offset: u16, header: u32) -> Self {
        ExtCapability {
            id: (header & 0xffff) as u16,
            version: ((header >> 16) & 0xf) as u8,
            offset,
            next: ((header >> 20) & 0xffc) as u16,
        }
    }

    /// A null entry: id 0, only there to be skipped through its next pointer.
    pub fn is_hidden(&self) -> bool {
        self.id == 0
    }
}

fn u16_at(config: &[u8], offset: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        config.get(offset..offset + 2)?.try_into().ok()?,
    ))
}

/// Little-endian u32 at `offset`, if the blob holds it.
pub fn u32_at(config: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        config.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

/// Walks the standard capability list (only when the status register says there is one).
pub fn capabilities(config: &[u8]) -> Vec<Capability> {
    let mut out = Vec::new();
    let has_list = u16_at(config, usize::from(STATUS)).is_some_and(|s| s & STATUS_CAP_LIST != 0);
    let Some(&first) = config.get(usize::from(CAPABILITIES_POINTER)) else {
        return out;
    };
    if !has_list {
        return out;
    }
    let mut visited = [false; 256];
    let mut ptr = first & 0xfc;
    while ptr != 0 {
        let p = usize::from(ptr);
        if p < 0x40 || p + 1 >= config.len() {
            warn!(
                "capability pointer {ptr:#x} outside 0x40..{:#x}; walk stopped",
                config.len()
            );
            break;
        }
        if visited[p] {
            warn!("capability list loops back to {ptr:#x}; walk stopped");
            break;
        }
        visited[p] = true;
        out.push(Capability {
            id: config[p],
            offset: ptr,
        });
        ptr = config[p + 1] & 0xfc;
    }
    out
}

/// Walks the extended capability list from 0x100. Null entries (id 0) are reported and the
/// walk continues through their next pointer. A header of 0 or all-ones at 0x100 means no
/// extended capabilities.
pub fn extended_capabilities(config: &[u8]) -> Vec<ExtCapability> {
    let mut out = Vec::new();
    let mut offset = EXT_CAPABILITIES_START;
    match u32_at(config, usize::from(offset)) {
        None | Some(0) | Some(u32::MAX) => return out,
        Some(_) => {}
    }
    let mut visited = vec![false; config.len() / 4 + 1];
    loop {
        let o = usize::from(offset);
        let Some(header) = u32_at(config, o) else {
            warn!(
                "extended capability at {offset:#x} outside the {}-byte config space; walk stopped",
                config.len()
            );
            break;
        };
        if visited[o / 4] {
            warn!("extended capability list loops back to {offset:#x}; walk stopped");
            break;
        }
        visited[o / 4] = true;
        let cap = ExtCapability::from_header(offset, header);
        out.push(cap);
        if cap.next == 0 {
            break;
        }
        if cap.next < EXT_CAPABILITIES_START {
            warn!(
                "extended capability at {offset:#x} points into the header ({:#x}); walk stopped",
                cap.next
            );
            break;
        }
        offset = cap.next;
    }
    out
}

/// Offset of the first standard capability with `id`.
pub fn find_capability(config: &[u8], id: u8) -> Option<u8> {
    capabilities(config)
        .into_iter()
        .find(|c| c.id == id)
        .map(|c| c.offset)
}

/// Offset of the first extended capability with `id` (ids of 0 are never found).
pub fn find_extended_capability(config: &[u8], id: u16) -> Option<u16> {
    extended_capabilities(config)
        .into_iter()
        .find(|c| c.id == id && id != 0)
        .map(|c| c.offset)
}

/// A decoded BAR register (pair).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarInfo {
    /// Address space kind.
    pub kind: BarKind,
    /// Prefetchable memory.
    pub prefetchable: bool,
    /// Address programmed in the register(s).
    pub address: u64,
}

/// Decodes a BAR from its register and the next one (`high`, used only for 64-bit BARs).
/// Memory type 01 (below 1 MiB, legacy) and the reserved type 11 decode as 32-bit.
pub fn bar_info(low: u32, high: u32) -> BarInfo {
    if low & 1 != 0 {
        return BarInfo {
            kind: BarKind::Io,
            prefetchable: false,
            address: u64::from(low & 0xffff_fffc),
        };
    }
    let prefetchable = low & 0x8 != 0;
    let base = u64::from(low & 0xffff_fff0);
    if (low >> 1) & 0b11 == 0b10 {
        BarInfo {
            kind: BarKind::Mem64,
            prefetchable,
            address: u64::from(high) << 32 | base,
        }
    } else {
        BarInfo {
            kind: BarKind::Mem32,
            prefetchable,
            address: base,
        }
    }
}

/// Decodes the six BAR registers of a type-0 header: (index, info) for each BAR, the upper
/// halves of 64-bit BARs skipped. Registers that read 0 are included (their size is unknown
/// without sizing); a 64-bit BAR in register 5 has no upper half and decodes as high = 0.
pub fn decode_bars(config: &[u8]) -> Vec<(u8, BarInfo)> {
    let mut out = Vec::new();
    let mut index = 0u8;
    while index < 6 {
        let reg = usize::from(BAR0) + 4 * usize::from(index);
        let Some(low) = u32_at(config, reg) else {
            break;
        };
        let high = if index < 5 {
            u32_at(config, reg + 4).unwrap_or(0)
        } else {
            0
        };
        let info = bar_info(low, high);
        out.push((index, info));
        index += if info.kind == BarKind::Mem64 { 2 } else { 1 };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4 KiB blob with the status capability bit and pointer set.
    fn blob(first: u8) -> Vec<u8> {
        let mut c = vec![0u8; 4096];
        c[usize::from(STATUS)] = STATUS_CAP_LIST as u8;
        c[usize::from(CAPABILITIES_POINTER)] = first;
        c
    }

    fn put_ext(c: &mut [u8], at: usize, id: u16, version: u8, next: u16) {
        let h = u32::from(id) | u32::from(version) << 16 | u32::from(next) << 20;
        c[at..at + 4].copy_from_slice(&h.to_le_bytes());
    }

    #[test]
    fn standard_list_stops_on_loops_and_bad_pointers() {
        let mut c = blob(0x40);
        c[0x40] = 0x01;
        c[0x41] = 0x50;
        c[0x50] = 0x05;
        c[0x51] = 0x40; // back to the first
        assert_eq!(
            capabilities(&c),
            vec![
                Capability {
                    id: 1,
                    offset: 0x40
                },
                Capability {
                    id: 5,
                    offset: 0x50
                }
            ]
        );
        // Pointer into the header, pointer at the last byte: stop.
        c[0x51] = 0x20;
        assert_eq!(capabilities(&c).len(), 2);
        c[0x51] = 0xff; // low bits masked: 0xfc is fine, its next (0) ends the list
        assert_eq!(capabilities(&c).len(), 3);
        // Self-loop.
        c[0x41] = 0x40;
        assert_eq!(capabilities(&c).len(), 1);
        // No status bit: no list, whatever the pointer says.
        c[usize::from(STATUS)] = 0;
        assert!(capabilities(&c).is_empty());
        // Truncated blobs never panic.
        assert!(capabilities(&c[..0x30]).is_empty());
        let mut short = blob(0x40);
        short.truncate(0x41);
        short[0x40] = 0x01;
        assert!(capabilities(&short).is_empty());
        assert!(capabilities(&[]).is_empty());
    }

    #[test]
    fn extended_list_reports_hidden_entries_and_stops_on_loops() {
        let mut c = blob(0);
        put_ext(&mut c, 0x100, 0, 0, 0x140);
        put_ext(&mut c, 0x140, EXT_CAP_ID_AER, 2, 0x200);
        put_ext(&mut c, 0x200, EXT_CAP_ID_DSN, 1, 0x140); // loop
        let caps = extended_capabilities(&c);
        assert_eq!(caps.len(), 3);
        assert!(caps[0].is_hidden());
        assert_eq!((caps[1].id, caps[1].version, caps[1].offset), (1, 2, 0x140));
        assert_eq!(find_extended_capability(&c, EXT_CAP_ID_DSN), Some(0x200));
        assert_eq!(find_extended_capability(&c, 0), None);
        // Pointing back below 0x100 ends the walk.
        put_ext(&mut c, 0x200, EXT_CAP_ID_DSN, 1, 0x0fc);
        assert_eq!(extended_capabilities(&c).len(), 3);
        // Pointing past the blob ends the walk.
        put_ext(&mut c, 0x200, EXT_CAP_ID_DSN, 1, 0xffc);
        assert_eq!(extended_capabilities(&c[..0x300]).len(), 3);
        // Empty and all-ones headers: no extended capabilities.
        put_ext(&mut c, 0x100, 0, 0, 0);
        assert!(extended_capabilities(&c).is_empty());
        c[0x100..0x104].fill(0xff);
        assert!(extended_capabilities(&c).is_empty());
        assert!(extended_capabilities(&c[..0x100]).is_empty());
    }

    #[test]
    fn bar_register_decoding() {
        assert_eq!(
            bar_info(0xc000_0000, 0xdead),
            BarInfo {
                kind: BarKind::Mem32,
                prefetchable: false,
                address: 0xc000_0000
            }
        );
        assert_eq!(
            bar_info(0x0200_000c, 0x1040),
            BarInfo {
                kind: BarKind::Mem64,
                prefetchable: true,
                address: 0x1040_0200_0000
            }
        );
        assert_eq!(
            bar_info(0x0000_c001, 0),
            BarInfo {
                kind: BarKind::Io,
                prefetchable: false,
                address: 0xc000
            }
        );
        // Legacy below-1M type and the reserved type decode as 32-bit.
        assert_eq!(bar_info(0x000d_0002, 0).kind, BarKind::Mem32);
        assert_eq!(bar_info(0x000d_0006, 0).kind, BarKind::Mem32);

        let mut c = vec![0u8; 0x40];
        c[0x10..0x14].copy_from_slice(&0xc000_0000u32.to_le_bytes());
        c[0x14..0x18].copy_from_slice(&0x0000_0004u32.to_le_bytes()); // 64-bit at 1
        c[0x18..0x1c].copy_from_slice(&0x0000_0001u32.to_le_bytes()); // its upper half
        c[0x24..0x28].copy_from_slice(&0x0000_0004u32.to_le_bytes()); // 64-bit at 5
        let bars = decode_bars(&c);
        let idx: Vec<u8> = bars.iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, [0, 1, 3, 4, 5]);
        assert_eq!(bars[1].1.address, 1 << 32);
        assert_eq!(bars[4].1.address, 0);
        assert!(decode_bars(&c[..0x12]).is_empty());
    }
}
