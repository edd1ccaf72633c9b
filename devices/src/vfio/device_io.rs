//! What a passthrough device needs of its VFIO device, as a trait: the real implementation
//! is the kernel's VFIO device fd ([`vfio_ioctls::VfioDevice`]); unit tests and the fuzz
//! targets use an in-memory device ([`super::fake`]), so the config shadow, MSI/MSI-X
//! virtualization and BAR traps run without /dev/vfio.

use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use vfio_ioctls::{VfioDevice, VfioRegionInfoCap};

use super::irq::{IrqSetter, VfioIrqSetter};

/// What VFIO says about one of the device's interrupt indexes (INTx, MSI, MSI-X).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqInfo {
    /// Number of vectors.
    pub count: u32,
    /// `VFIO_IRQ_INFO_*` flags.
    pub flags: u32,
}

/// The VFIO device operations [`super::VfioPciDevice`] uses. Region indexes are VFIO's
/// (`VFIO_PCI_BAR0_REGION_INDEX` .. `VFIO_PCI_CONFIG_REGION_INDEX`).
pub trait VfioDeviceIo: Send + Sync {
    /// Resets the function (`VFIO_DEVICE_RESET`); `EINVAL` when it has no reset method.
    fn reset(&self) -> std::io::Result<()>;
    /// Size of region `index` in bytes (0 when absent).
    fn region_size(&self, index: u32) -> u64;
    /// Offset of region `index` in the device fd (what its mmap offset starts from).
    fn region_offset(&self, index: u32) -> u64;
    /// `VFIO_REGION_INFO_FLAG_*` of region `index`.
    fn region_flags(&self, index: u32) -> u32;
    /// The areas of region `index` that may be mmapped, when VFIO restricts them (sparse
    /// mmap capability); `None` means the whole region.
    fn region_sparse_areas(&self, index: u32) -> Option<Vec<Range<u64>>>;
    /// Interrupt index `index`, if the device has it.
    fn irq_info(&self, index: u32) -> Option<IrqInfo>;
    /// Reads `data.len()` bytes at `offset` of region `index`; an access outside the region
    /// leaves `data` as it was.
    fn region_read(&self, index: u32, data: &mut [u8], offset: u64);
    /// Writes `data` at `offset` of region `index`; an access outside the region is dropped.
    fn region_write(&self, index: u32, data: &[u8], offset: u64);
    /// Where this device's `VFIO_DEVICE_SET_IRQS` calls go.
    fn irq_setter(&self) -> Box<dyn IrqSetter>;
    /// The fd BAR areas are mmapped from (only asked for regions flagged mmappable).
    fn mmap_fd(&self) -> RawFd;
}

impl VfioDeviceIo for Arc<VfioDevice> {
    fn reset(&self) -> std::io::Result<()> {
        // vfio-ioctls' own reset skips devices without a reset method silently and drops
        // the ioctl's result; the log says whether a reset happened.
        super::reset::vfio_device_reset(self.as_raw_fd())
    }

    fn region_size(&self, index: u32) -> u64 {
        self.get_region_size(index)
    }

    fn region_offset(&self, index: u32) -> u64 {
        self.get_region_offset(index)
    }

    fn region_flags(&self, index: u32) -> u32 {
        self.get_region_flags(index)
    }

    fn region_sparse_areas(&self, index: u32) -> Option<Vec<Range<u64>>> {
        self.get_region_caps(index).iter().find_map(|c| match c {
            VfioRegionInfoCap::SparseMmap(s) => Some(
                s.areas
                    .iter()
                    .map(|a| a.offset..a.offset + a.size)
                    .collect(),
            ),
            _ => None,
        })
    }

    fn irq_info(&self, index: u32) -> Option<IrqInfo> {
        self.get_irq_info(index).map(|i| IrqInfo {
            count: i.count,
            flags: i.flags,
        })
    }

    fn region_read(&self, index: u32, data: &mut [u8], offset: u64) {
        VfioDevice::region_read(self, index, data, offset);
    }

    fn region_write(&self, index: u32, data: &[u8], offset: u64) {
        VfioDevice::region_write(self, index, data, offset);
    }

    fn irq_setter(&self) -> Box<dyn IrqSetter> {
        Box::new(VfioIrqSetter(self.clone()))
    }

    fn mmap_fd(&self) -> RawFd {
        self.as_raw_fd()
    }
}
