//! Resetting a passthrough device (at attach and at teardown) with `VFIO_DEVICE_RESET`,
//! saying in the log whether it happened: vfio-ioctls' own `reset` skips devices without a
//! reset method silently and drops the ioctl's result.

use std::io;
use std::os::fd::RawFd;

use super::device_io::VfioDeviceIo;

/// `VFIO_DEVICE_RESET` = _IO(';', 100 + 11).
const VFIO_DEVICE_RESET: u64 = 0x3b6f;

/// Resets device `name` (FLR, PM or bus reset, whichever the host kernel can do); `when`
/// names the moment for the log. Returns whether the device was reset.
pub fn reset_device(name: &str, vfio: &dyn VfioDeviceIo, when: &str) -> bool {
    let Err(e) = vfio.reset() else {
        log::info!("{name}: device reset ({when})");
        return true;
    };
    if e.raw_os_error() == Some(libc::EINVAL) {
        // vfio-pci's answer for a function without FLR, PM or bus reset: a property of the
        // device, not an error (QEMU says the same for edu, ivshmem, bochs-display).
        log::info!("{name}: no reset method; not reset ({when})");
    } else {
        log::warn!("{name}: cannot reset the device ({when}): {e}");
    }
    false
}

/// `VFIO_DEVICE_RESET` on the VFIO device fd `fd`, with the kernel's answer.
pub fn vfio_device_reset(fd: RawFd) -> io::Result<()> {
    // SAFETY: VFIO_DEVICE_RESET takes no argument; `fd` is a VFIO device fd.
    let rc = unsafe { libc::ioctl(fd, VFIO_DEVICE_RESET as _) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
