//! Reading one 32-bit register of a device on vfio-pci through VFIO (`conduit host peek`),
//! e.g. NVIDIA's `PMC_BOOT_0` at BAR0 offset 0, which identifies the chip.
//!
//! Why VFIO and not `/dev/mem` or sysfs `resourceN`: a device idle on vfio-pci may sit in
//! D3hot, where its BARs read as all-ones, and a BAR claimed by a host driver is closed to
//! `/dev/mem` and `resourceN` mappings (`CONFIG_IO_STRICT_DEVMEM`, set by distribution
//! kernels). Opening the device with VFIO powers it up and enables its decoding (vfio-pci
//! resets it first when it can), exactly as a VM start does.
//!
//! [`plan_peek`] checks everything sysfs can tell (device on vfio-pci, group viable, BAR
//! implemented, offset inside it) and changes nothing; [`read_register`] opens the device.

use std::path::Path;
use std::sync::Arc;

use devices::vfio::{self, HostDevice};
use vfio_ioctls::{VfioContainer, VfioDevice, VfioIommufd, VfioOps};

use super::inventory::PciDevice;
use super::sysfs::{normalize_address, HostRoot};
use super::HostError;

/// Where to read: a BAR and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeekAt {
    /// BAR number (0-5).
    pub bar: u8,
    /// Byte offset in the BAR; a multiple of 4.
    pub offset: u64,
}

/// A checked peek: the device and where to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeekPlan {
    /// The device, checked like `conduit run --device` checks it.
    pub device: HostDevice,
    /// Where to read.
    pub at: PeekAt,
    /// Size of the BAR in bytes (from sysfs).
    pub bar_size: u64,
}

/// The region may be read (`VFIO_REGION_INFO_FLAG_READ`).
const REGION_READ: u32 = vfio_bindings::bindings::vfio::VFIO_REGION_INFO_FLAG_READ;

/// Checks that `address` can be peeked at `at`; changes nothing.
pub fn plan_peek(root: &HostRoot, address: &str, at: PeekAt) -> Result<PeekPlan, HostError> {
    let address = normalize_address(address)?;
    let bad = |why: String| HostError::BadPeek {
        address: address.clone(),
        why,
    };
    if at.bar > 5 {
        return Err(bad(format!(
            "there is no BAR{} (BARs are numbered 0-5)",
            at.bar
        )));
    }
    if !at.offset.is_multiple_of(4) {
        return Err(bad(format!(
            "offset {:#x} is not a multiple of 4 (registers are read 32 bits at a time)",
            at.offset
        )));
    }
    // The same checks as `conduit run --device`: exists, in a group, group viable, on vfio-pci.
    let device = vfio::check_host_device(&root.path("/sys/bus/pci/devices"), &address)
        .map_err(HostError::NotPassable)?;
    let pci = PciDevice::read(root, &address)?;
    let Some(bar) = pci.bars.iter().find(|b| b.index == at.bar) else {
        return Err(bad(format!("BAR{} is not implemented", at.bar)));
    };
    if at.offset.saturating_add(4) > bar.size {
        return Err(bad(format!(
            "offset {:#x} is beyond BAR{} ({:#x} bytes)",
            at.offset, at.bar, bar.size
        )));
    }
    Ok(PeekPlan {
        device,
        at,
        bar_size: bar.size,
    })
}

/// Opens the device with VFIO (iommufd and its cdev when the host has both, like `conduit
/// run`, else a type1 container) and reads the register.
pub fn read_register(plan: &PeekPlan) -> Result<u32, HostError> {
    let dev = &plan.device;
    let vfio_err = |reason: String| HostError::Vfio {
        address: dev.address.clone(),
        group: dev.group,
        reason,
    };
    let use_iommufd = Path::new("/dev/iommu").exists() && dev.sysfs_path.join("vfio-dev").is_dir();
    let ops: Arc<dyn VfioOps> = if use_iommufd {
        let iommufd = iommufd_ioctls::IommuFd::new()
            .map_err(|e| vfio_err(format!("cannot open /dev/iommu: {e}")))?;
        Arc::new(
            VfioIommufd::new(Arc::new(iommufd), None, None).map_err(|e| vfio_err(e.to_string()))?,
        )
    } else {
        Arc::new(
            VfioContainer::new(None)
                .map_err(|e| vfio_err(format!("cannot open /dev/vfio/vfio: {e}")))?,
        )
    };
    let device = VfioDevice::new(&dev.sysfs_path, ops, use_iommufd).map_err(|e| {
        let text = format!("{e} ({e:?})");
        vfio_err(if text.contains("EBUSY") || text.contains("busy") {
            "the device is in use (a VM or another process holds its IOMMU group)".into()
        } else {
            e.to_string()
        })
    })?;
    // VFIO's region index of BAR n is n.
    let index = u32::from(plan.at.bar);
    if device.get_region_flags(index) & REGION_READ == 0 {
        return Err(vfio_err(format!(
            "VFIO does not allow reading BAR{}",
            plan.at.bar
        )));
    }
    let size = device.get_region_size(index);
    if plan.at.offset + 4 > size {
        return Err(vfio_err(format!(
            "offset {:#x} is beyond BAR{} as VFIO reports it ({size:#x} bytes)",
            plan.at.offset, plan.at.bar
        )));
    }
    // region_read logs and leaves the buffer alone on a failed read: all-ones then, which
    // is also what a device that does not answer returns, and what the caller warns about.
    let mut buf = [0xff_u8; 4];
    device.region_read(index, &mut buf, plan.at.offset);
    Ok(u32::from_le_bytes(buf))
}

/// Plans and reads.
pub fn peek(root: &HostRoot, address: &str, at: PeekAt) -> Result<u32, HostError> {
    let plan = plan_peek(root, address, at)?;
    read_register(&plan)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{FakeHost, H200_RESOURCE};
    use super::*;

    fn host() -> FakeHost {
        let h = FakeHost::new();
        h.iommu("dmar0");
        h.pci("0000:17:00.0", "10de:2335", 0x030200)
            .driver("vfio-pci")
            .group(20)
            .resource(H200_RESOURCE);
        h.pci("0000:65:00.0", "10de:2335", 0x030200)
            .driver("nvidia")
            .group(30)
            .resource(H200_RESOURCE);
        h
    }

    fn at(bar: u8, offset: u64) -> PeekAt {
        PeekAt { bar, offset }
    }

    #[test]
    fn a_device_on_vfio_pci_is_planned() {
        let h = host();
        let p = plan_peek(&h.root(), "17:00.0", at(0, 0)).unwrap();
        assert_eq!(p.device.address, "0000:17:00.0");
        assert_eq!(p.device.group, 20);
        assert_eq!(p.bar_size, 16 << 20);
        // The last word of the 256 GiB BAR2.
        let p = plan_peek(&h.root(), "0000:17:00.0", at(2, (256 << 30) - 4)).unwrap();
        assert_eq!(p.bar_size, 256 << 30);
    }

    #[test]
    fn bad_requests_name_the_device_and_the_fault() {
        let h = host();
        let msg = |addr: &str, a: PeekAt| plan_peek(&h.root(), addr, a).unwrap_err().to_string();
        let m = msg("0000:17:00.0", at(1, 0));
        assert!(
            m.contains("0000:17:00.0") && m.contains("BAR1 is not implemented"),
            "{m}"
        );
        let m = msg("0000:17:00.0", at(6, 0));
        assert!(m.contains("no BAR6"), "{m}");
        let m = msg("0000:17:00.0", at(0, 2));
        assert!(m.contains("0x2 is not a multiple of 4"), "{m}");
        let m = msg("0000:17:00.0", at(0, 16 << 20));
        assert!(m.contains("beyond BAR0 (0x1000000 bytes)"), "{m}");
        let m = msg("0000:65:00.0", at(0, 0));
        assert!(
            m.contains("0000:65:00.0 (driver nvidia)")
                && m.contains("conduit host bind 0000:65:00.0"),
            "{m}"
        );
        let m = msg("0000:99:00.0", at(0, 0));
        assert!(m.contains("0000:99:00.0 does not exist"), "{m}");
        let m = msg("gpu0", at(0, 0));
        assert!(m.contains("not a PCI address"), "{m}");
    }
}
