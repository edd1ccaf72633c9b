//! Tests against a real NVIDIA H200's config space as a guest saw it
//! (`/work/shared/fixtures/h200`, see its README).

use std::path::PathBuf;

use crate::capabilities::*;
use crate::device::BarKind;
use crate::msi::MsiLayout;
use crate::msix::MsixLayout;
use crate::resource::parse_sysfs_resource;
use crate::sparse::sparse_areas;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// `shared/fixtures/h200` next to the repository, or next to a directory enclosing it (a
/// git worktree under `wt/`).
fn fixture_dir() -> PathBuf {
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates: Vec<PathBuf> = crate_dir
        .ancestors()
        .skip(2)
        .map(|a| a.join("shared/fixtures/h200"))
        .collect();
    candidates
        .iter()
        .find(|c| c.is_dir())
        .unwrap_or(&candidates[0])
        .clone()
}

fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "H200 fixture {} is missing or unreadable ({e}); it is expected in the shared \
             directory next to the repository",
            path.display()
        )
    })
}

fn config() -> Vec<u8> {
    let c = fixture("config.bin");
    assert_eq!(
        c.len(),
        4096,
        "config.bin must be a full 4 KiB config space"
    );
    c
}

#[test]
fn identity() {
    let c = config();
    assert_eq!(u16::from_le_bytes([c[0], c[1]]), 0x10de);
    assert_eq!(u16::from_le_bytes([c[2], c[3]]), 0x2335);
    let class = u32::from_le_bytes([c[9], c[10], c[11], 0]);
    assert_eq!(class, 0x03_02_00);
    assert_eq!(c[0x0e] & 0x7f, 0, "type-0 header");
}

#[test]
fn standard_capabilities() {
    let c = config();
    let caps: Vec<(u8, u8)> = capabilities(&c).iter().map(|k| (k.id, k.offset)).collect();
    assert_eq!(
        caps,
        [
            (CAP_ID_PM, 0x40),
            (CAP_ID_MSI, 0x48),
            (CAP_ID_PCIE, 0x60),
            (CAP_ID_MSIX, 0xb0)
        ]
    );
}

#[test]
fn msix_and_msi_capabilities() {
    let c = config();
    let off = find_capability(&c, CAP_ID_MSIX).expect("MSI-X capability");
    let msix = MsixLayout::from_capability(&c, off).unwrap();
    assert_eq!(
        msix,
        MsixLayout {
            table_size: 9,
            table_bir: 0,
            table_offset: 0xb9_0000,
            pba_bir: 0,
            pba_offset: 0xba_0000,
        }
    );
    assert_eq!(msix.table_range(), 0xb9_0000..0xb9_0090);
    assert_eq!(msix.pba_range(), 0xba_0000..0xba_0008);
    let control = u16::from_le_bytes([c[usize::from(off) + 2], c[usize::from(off) + 3]]);
    assert_ne!(
        control & 0x8000,
        0,
        "MSI-X was enabled by the guest's driver"
    );

    let off = find_capability(&c, CAP_ID_MSI).expect("MSI capability");
    let msi = MsiLayout::from_capability(&c, off).unwrap();
    assert_eq!(
        msi,
        MsiLayout {
            vectors: 16,
            is_64bit: true,
            per_vector_mask: true
        }
    );
}

#[test]
fn extended_capabilities_with_hidden_entries() {
    let c = config();
    let caps: Vec<(u16, u16, bool)> = extended_capabilities(&c)
        .iter()
        .map(|k| (k.offset, k.id, k.is_hidden()))
        .collect();
    assert_eq!(
        caps,
        [
            (0x100, 0, true),
            (0x12c, EXT_CAP_ID_LTR, false),
            (0x134, 0, true),
            (0x1b8, EXT_CAP_ID_AER, false),
            (0x248, 0, true),
            (0x250, 0, true),
            (0x2a4, EXT_CAP_ID_VSEC, false),
            (0x2b8, EXT_CAP_ID_POWER_BUDGET, false),
            (0x2f0, EXT_CAP_ID_DSN, false),
        ]
    );
    let visible: Vec<u16> = extended_capabilities(&c)
        .iter()
        .filter(|k| !k.is_hidden())
        .map(|k| k.offset)
        .collect();
    assert_eq!(visible, [0x12c, 0x1b8, 0x2a4, 0x2b8, 0x2f0]);
    assert_eq!(find_extended_capability(&c, EXT_CAP_ID_AER), Some(0x1b8));
}

#[test]
fn bars_from_config_and_resource() {
    let c = config();
    let bars = decode_bars(&c);
    let idx: Vec<u8> = bars.iter().map(|(i, _)| *i).collect();
    assert_eq!(idx, [0, 2, 4]);
    for (_, b) in &bars {
        assert_eq!(b.kind, BarKind::Mem64);
        assert!(b.prefetchable);
    }

    let text = String::from_utf8(fixture("resource")).expect("resource is text");
    let res = parse_sysfs_resource(&text).unwrap();
    assert!(res.len() >= 7, "BARs 0..=5 and the ROM");
    let sizes: Vec<u64> = res[..6].iter().map(|r| r.size()).collect();
    assert_eq!(sizes, [16 * MIB, 0, 256 * GIB, 0, 32 * MIB, 0]);
    for i in [0, 2, 4] {
        let r = &res[i];
        assert!(r.is_memory() && r.is_64bit() && r.prefetchable(), "BAR{i}");
        // The guest placement in `resource` is what the BAR registers hold.
        let (_, b) = bars.iter().find(|(j, _)| usize::from(*j) == i).unwrap();
        assert_eq!(b.address, r.start, "BAR{i}");
        assert_eq!(r.start % r.size(), 0, "BAR{i} naturally aligned");
        // The low flag bits repeat the BAR type bits (0xc: 64-bit prefetchable).
        assert_eq!(r.flags & 0xf, 0xc);
    }
    assert_eq!(res[6].size(), 0, "no expansion ROM");
}

#[test]
fn bar0_sparse_areas_around_msix() {
    let c = config();
    let off = find_capability(&c, CAP_ID_MSIX).unwrap();
    let msix = MsixLayout::from_capability(&c, off).unwrap();
    let res = parse_sysfs_resource(&String::from_utf8(fixture("resource")).unwrap()).unwrap();
    let bar0_size = res[0].size();
    assert_eq!(msix.table_bir, 0);
    assert_eq!(msix.pba_bir, 0);
    let areas = sparse_areas(bar0_size, &[msix.table_range(), msix.pba_range()], 0x1000).unwrap();
    assert_eq!(
        areas,
        vec![0..0xb9_0000, 0xb9_1000..0xba_0000, 0xba_1000..0x100_0000]
    );
    // The other BARs have nothing to trap: mapped whole.
    assert_eq!(
        sparse_areas(res[2].size(), &[], 0x1000).unwrap(),
        vec![0..256 * GIB]
    );
}
