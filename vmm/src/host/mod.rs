//! `conduit host`: check, inventory and prepare a host for VFIO passthrough.
//!
//! Everything here reads the host through a [`HostRoot`] (a path prefix for `/sys`, `/proc`,
//! `/dev`, `/lib/modules`, `/usr/share` and the state file), so the unit tests run on fake
//! sysfs/procfs trees built in temporary directories. The one place that changes the host,
//! [`bind`], plans its sysfs writes as data and hands them to a [`Kernel`]: the real one
//! writes the files, the tests' one simulates what Linux does on each write.
//!
//! - [`check`]: readiness findings (`conduit host check`).
//! - [`inventory`]: PCI devices, IOMMU groups and readiness (`conduit host list`).
//! - [`bind`]: move whole IOMMU groups to vfio-pci and back (`conduit host bind|unbind`).
//! - [`flavor`]: pick N ready devices for `run --gpus` ([`select_devices`]).
//! - [`peek`]: read one register of a device on vfio-pci through VFIO (`conduit host peek`).
//! - [`names`]: human names of devices and the built-in flavor names.
//! - [`usage`]: whether the host itself uses a device (mounted disk, default-route NIC).

pub mod bind;
pub mod check;
pub mod cmd;
pub mod flavor;
pub mod inventory;
pub mod names;
pub mod peek;
pub mod sysfs;
pub mod usage;

#[cfg(test)]
pub(crate) mod testutil;

use std::io;
use std::path::PathBuf;

pub use bind::{Kernel, SysfsKernel};
pub use cmd::{main, HostArgs};
pub use flavor::{select_devices, select_devices_besides};
pub use sysfs::HostRoot;

/// Errors of `conduit host`; each names the file, device or group at fault.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A host file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File or directory.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// A sysfs or state file could not be written.
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        /// File written.
        path: PathBuf,
        /// What was written.
        value: String,
        /// Underlying error.
        source: io::Error,
    },
    /// A host file holds something this code does not understand.
    #[error("{path}: cannot parse {content:?} as {what}")]
    Parse {
        /// File read.
        path: PathBuf,
        /// The offending text.
        content: String,
        /// What was expected.
        what: &'static str,
    },
    /// Not a PCI address (`DDDD:BB:DD.F` or `BB:DD.F`).
    #[error("{0:?} is not a PCI address (expected DDDD:BB:DD.F or BB:DD.F)")]
    BadAddress(String),
    /// Not a `VENDOR:DEVICE` id.
    #[error("{0:?} is not a PCI id (expected VENDOR:DEVICE in hex, e.g. 10de:2335)")]
    BadId(String),
    /// A `--gpus` spec that does not parse.
    #[error("bad device spec {spec:?}: {why} (expected VENDOR:DEVICExN or NAMExN, e.g. 10de:2335x4 or h200x4)")]
    BadSpec {
        /// The spec given.
        spec: String,
        /// What is wrong with it.
        why: String,
    },
    /// No PCI device at that address.
    #[error("no PCI device {address} on this host ({path} does not exist)")]
    NoDevice {
        /// Address asked for.
        address: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// No PCI device with that id.
    #[error("no PCI device with id {id} on this host")]
    NoMatch {
        /// `vendor:device`.
        id: String,
    },
    /// The device is in no IOMMU group, so VFIO cannot take it.
    #[error(
        "{address} is in no IOMMU group: the IOMMU is absent or off (run `conduit host check`)"
    )]
    NoIommuGroup {
        /// Device address.
        address: String,
    },
    /// Binding would take a device the host is using.
    #[error(
        "refusing to bind IOMMU group {group} (asked for {address}): {reason}; --force overrides"
    )]
    InUse {
        /// Device asked for.
        address: String,
        /// Its IOMMU group.
        group: u32,
        /// Which member is used and how.
        reason: String,
    },
    /// Fewer bindable devices than `--count`.
    #[error(
        "only {available} of the {wanted} devices {id} asked for can be bound:{}",
        listing(found)
    )]
    NotEnoughToBind {
        /// `vendor:device`.
        id: String,
        /// `--count`.
        wanted: usize,
        /// How many could be bound.
        available: usize,
        /// Every device of that id, with why it cannot be bound (empty when it can).
        found: Vec<(String, String)>,
    },
    /// Fewer ready devices than a `--gpus` spec asks for.
    #[error(
        "not enough devices ready for passthrough for {spec}: {wanted} wanted, {ready} ready:{}",
        listing(found)
    )]
    NotEnoughReady {
        /// The spec given.
        spec: String,
        /// How many were asked for.
        wanted: usize,
        /// How many are ready.
        ready: usize,
        /// Every device of the id(s), with why it is not ready (`ready` when it is).
        found: Vec<(String, String)>,
    },
    /// `modprobe` failed.
    #[error("modprobe {module} failed: {detail}")]
    Modprobe {
        /// Module name.
        module: String,
        /// Exit status or spawn error, and stderr.
        detail: String,
    },
    /// A device did not end up on the driver it was moved to.
    #[error(
        "{address} (IOMMU group {group}) is bound to {actual} after the writes, not {expected}"
    )]
    BindFailed {
        /// Device address.
        address: String,
        /// Its IOMMU group.
        group: u32,
        /// Driver wanted (`none` for no driver).
        expected: String,
        /// Driver found (`none` for no driver).
        actual: String,
    },
    /// The bind state file is not valid.
    #[error("bind state file {path} is not valid: {source}")]
    State {
        /// State file.
        path: PathBuf,
        /// Parse error.
        source: serde_json::Error,
    },
    /// The device cannot be opened with VFIO as it is (`peek`).
    #[error(transparent)]
    NotPassable(devices::vfio::GroupError),
    /// A `peek` that asks for something the device does not have.
    #[error("cannot peek {address}: {why}")]
    BadPeek {
        /// Device address.
        address: String,
        /// What is wrong with the request.
        why: String,
    },
    /// Opening or reading the device through VFIO failed (`peek`).
    #[error("cannot read {address} (IOMMU group {group}) through VFIO: {reason}")]
    Vfio {
        /// Device address.
        address: String,
        /// Its IOMMU group.
        group: u32,
        /// Why.
        reason: String,
    },
    /// `unbind` of a device that `bind` did not move.
    #[error("{address} was not bound by conduit (no record in {path}); nothing to restore")]
    NotRecorded {
        /// Device address.
        address: String,
        /// State file.
        path: PathBuf,
    },
}

/// Formats `(address, reason)` pairs as indented lines for the error messages above.
fn listing(found: &[(String, String)]) -> String {
    if found.is_empty() {
        return " none found".to_string();
    }
    found.iter().fold(String::new(), |mut s, (addr, why)| {
        s.push_str("\n  ");
        s.push_str(addr);
        s.push_str(": ");
        s.push_str(why);
        s
    })
}
