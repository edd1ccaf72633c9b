//! A range-keyed bus: the vCPU threads look up which device owns a PIO port or MMIO address.
//!
//! Ranges never overlap; lookups take the greatest base at or below the address and check the
//! length, so a lookup is one `BTreeMap` range query.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device that answers accesses to the ranges it is inserted at.
pub trait BusDevice: Send {
    /// Reads `data.len()` bytes at `offset` from the start of the range (`base`).
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]);
    /// Writes `data` at `offset` from the start of the range (`base`).
    fn write(&mut self, base: u64, offset: u64, data: &[u8]);
}

/// Errors while changing a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The new range is empty or wraps around the address space.
    #[error("invalid bus range {base:#x}+{len:#x}")]
    InvalidRange {
        /// Start of the range.
        base: u64,
        /// Length of the range.
        len: u64,
    },
    /// The new range overlaps one already on the bus.
    #[error("bus range {base:#x}+{len:#x} overlaps {other_base:#x}+{other_len:#x}")]
    Overlap {
        /// Start of the new range.
        base: u64,
        /// Length of the new range.
        len: u64,
        /// Start of the range already present.
        other_base: u64,
        /// Length of the range already present.
        other_len: u64,
    },
    /// No range starts at that address.
    #[error("no bus range starts at {0:#x}")]
    NotFound(u64),
}

/// A shared handle to a device on a bus.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Clone)]
struct Entry {
    len: u64,
    device: SharedDevice,
}

/// A set of non-overlapping address ranges, each owned by one device.
#[derive(Clone, Default)]
pub struct Bus {
    ranges: BTreeMap<u64, Entry>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `device` at `[base, base + len)`.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::InvalidRange { base, len })?;
        let clash = self
            .ranges
            .range(..end)
            .next_back()
            .filter(|(b, e)| **b + e.len > base);
        if let Some((other_base, e)) = clash {
            return Err(BusError::Overlap {
                base,
                len,
                other_base: *other_base,
                other_len: e.len,
            });
        }
        self.ranges.insert(base, Entry { len, device });
        Ok(())
    }

    /// Removes the range starting at `base`, returning its device.
    pub fn remove(&mut self, base: u64) -> Result<SharedDevice, BusError> {
        self.ranges
            .remove(&base)
            .map(|e| e.device)
            .ok_or(BusError::NotFound(base))
    }

    /// Moves the range at `old_base` to `new_base` (a guest reprogrammed a BAR).
    pub fn relocate(&mut self, old_base: u64, new_base: u64) -> Result<(), BusError> {
        let entry = self
            .ranges
            .remove(&old_base)
            .ok_or(BusError::NotFound(old_base))?;
        let (len, device) = (entry.len, entry.device.clone());
        if let Err(e) = self.insert(device, new_base, len) {
            self.ranges.insert(old_base, entry);
            return Err(e);
        }
        Ok(())
    }

    /// The device owning `addr`, with the range base.
    fn resolve(&self, addr: u64) -> Option<(u64, &SharedDevice)> {
        let (base, entry) = self.ranges.range(..=addr).next_back()?;
        (addr - base < entry.len).then_some((*base, &entry.device))
    }

    /// Dispatches a read; returns false (leaving `data` untouched) when no device owns `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr) {
            Some((base, dev)) => {
                lock(dev).read(base, addr - base, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a write; returns false when no device owns `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr) {
            Some((base, dev)) => {
                lock(dev).write(base, addr - base, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device; a device whose lock was poisoned by a panicking thread is still served,
/// because the VM is being torn down anyway and the state is plain data.
fn lock(dev: &SharedDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    dev.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorder {
        last: Option<(u64, u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
            self.last = Some((base, offset, data.to_vec()));
        }
        fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
            self.last = Some((base, offset, data.to_vec()));
        }
    }

    fn recorder() -> Arc<Mutex<Recorder>> {
        Arc::new(Mutex::new(Recorder { last: None }))
    }

    #[test]
    fn dispatches_by_range_with_offsets() {
        let mut bus = Bus::new();
        let a = recorder();
        let b = recorder();
        bus.insert(a.clone(), 0x3f8, 8).unwrap();
        bus.insert(b.clone(), 0x400, 0x10).unwrap();
        let mut d = [0u8; 1];
        assert!(bus.read(0x3fa, &mut d));
        assert_eq!(d[0], 2);
        assert!(bus.write(0x40f, &[7]));
        assert_eq!(b.lock().unwrap().last, Some((0x400, 0xf, vec![7])));
        assert!(
            !bus.read(0x400 + 0x10, &mut d),
            "one past the end is unowned"
        );
        assert!(!bus.read(0x3f7, &mut d));
    }

    #[test]
    fn rejects_overlaps_and_bad_ranges() {
        let mut bus = Bus::new();
        bus.insert(recorder(), 0x1000, 0x100).unwrap();
        assert!(matches!(
            bus.insert(recorder(), 0x10ff, 1),
            Err(BusError::Overlap {
                other_base: 0x1000,
                ..
            })
        ));
        assert!(matches!(
            bus.insert(recorder(), 0xf00, 0x101),
            Err(BusError::Overlap { .. })
        ));
        assert!(bus.insert(recorder(), 0xf00, 0x100).is_ok());
        assert!(bus.insert(recorder(), 0x1100, 0x100).is_ok());
        assert_eq!(
            bus.insert(recorder(), u64::MAX, 2).err(),
            Some(BusError::InvalidRange {
                base: u64::MAX,
                len: 2
            })
        );
        assert!(matches!(
            bus.insert(recorder(), 0x5000, 0),
            Err(BusError::InvalidRange { .. })
        ));
    }

    #[test]
    fn relocate_moves_and_restores_on_clash() {
        let mut bus = Bus::new();
        let a = recorder();
        bus.insert(a.clone(), 0x1000, 0x100).unwrap();
        bus.insert(recorder(), 0x3000, 0x100).unwrap();
        bus.relocate(0x1000, 0x2000).unwrap();
        let mut d = [0u8; 4];
        assert!(!bus.read(0x1000, &mut d));
        assert!(bus.read(0x2004, &mut d));
        assert_eq!(a.lock().unwrap().last.as_ref().unwrap().0, 0x2000);
        assert!(bus.relocate(0x2000, 0x2f80).is_err());
        assert!(
            bus.read(0x2004, &mut d),
            "range stays where it was after a failed move"
        );
        assert_eq!(bus.relocate(0x9999, 0), Err(BusError::NotFound(0x9999)));
        assert!(bus.remove(0x2000).is_ok());
        assert!(!bus.read(0x2004, &mut d));
    }
}
