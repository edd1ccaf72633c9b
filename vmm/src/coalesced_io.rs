//! Coalesced port I/O for the PCI config-address port 0xCF8.
//!
//! Every type-1 config access is an `out` to 0xCF8 followed by an `in`/`out` on 0xCFC.
//! The write to 0xCF8 only latches an address, so KVM may queue it in the coalesced-I/O
//! ring instead of exiting; the queued writes are replayed, in order, before the next
//! exit that could observe them is handled. That halves the exits of the guest's PCI
//! scans (the kernel's early scans of 256 buses are seconds of boot under nested
//! virtualization).

use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use devices::Bus;
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VcpuFd, VmFd};

/// The config-address port and its width.
const CONFIG_ADDRESS_PORT: u64 = 0xcf8;
const CONFIG_ADDRESS_LEN: u32 = 4;

/// One ring entry, as `struct kvm_coalesced_mmio` lays it out.
#[repr(C)]
#[derive(Clone, Copy)]
struct Entry {
    phys_addr: u64,
    len: u32,
    pio: u32,
    data: [u8; 8],
}

/// Where the queued writes go when they are replayed.
pub trait ReplayTarget {
    /// A queued port write.
    fn pio_write(&self, port: u64, data: &[u8]);
    /// A queued MMIO write.
    fn mmio_write(&self, addr: u64, data: &[u8]);
}

impl ReplayTarget for (&std::sync::RwLock<Bus>, &std::sync::RwLock<Bus>) {
    fn pio_write(&self, port: u64, data: &[u8]) {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .write(port, data);
    }
    fn mmio_write(&self, addr: u64, data: &[u8]) {
        self.1
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .write(addr, data);
    }
}

/// The VM's coalesced-I/O ring (one page shared by KVM and all vCPU threads).
pub struct CoalescedRing {
    base: NonNull<u8>,
    len: usize,
    owned: bool,
    capacity: u32,
    /// Serializes consumers: vCPU threads replay the one ring.
    replay: Mutex<()>,
    replayed: AtomicU64,
}

// SAFETY: the ring page is shared memory made for concurrent access: the indices are read
// and written atomically, entries are read only between `first` and `last` (published by
// KVM with a barrier), and consumers are serialized by `replay`.
unsafe impl Send for CoalescedRing {}
// SAFETY: as for Send.
unsafe impl Sync for CoalescedRing {}

impl CoalescedRing {
    /// Maps the ring through `vcpu` and asks KVM to queue writes to 0xCF8 in it. `None`
    /// when this KVM cannot (then every access exits as before).
    pub fn enable(kvm: &Kvm, vm: &VmFd, vcpu: &VcpuFd) -> Option<CoalescedRing> {
        if !kvm.check_extension(Cap::CoalescedPio) {
            log::debug!("KVM has no coalesced PIO: 0xCF8 writes exit");
            return None;
        }
        let page = page_size();
        let offset = page * kvm_bindings::KVM_COALESCED_MMIO_PAGE_OFFSET as usize;
        // SAFETY: maps one page of the vCPU fd at KVM's documented ring offset; the result
        // is checked and unmapped in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                vcpu.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            log::debug!(
                "cannot map the coalesced I/O ring: {}",
                std::io::Error::last_os_error()
            );
            return None;
        }
        let ring = CoalescedRing {
            base: NonNull::new(ptr.cast())?,
            len: page,
            owned: true,
            capacity: ring_capacity(page),
            replay: Mutex::new(()),
            replayed: AtomicU64::new(0),
        };
        // Registered only once the ring is mapped: a queued write nobody replays is lost.
        if let Err(e) =
            vm.register_coalesced_mmio(IoEventAddress::Pio(CONFIG_ADDRESS_PORT), CONFIG_ADDRESS_LEN)
        {
            log::debug!("cannot coalesce 0xCF8 writes: {e}");
            return None;
        }
        Some(ring)
    }

    fn first(&self) -> &AtomicU32 {
        // SAFETY: the ring page starts with the u32 consumer index, 4-byte aligned.
        unsafe { &*self.base.as_ptr().cast::<AtomicU32>() }
    }

    fn last(&self) -> &AtomicU32 {
        // SAFETY: the u32 producer index follows the consumer index.
        unsafe { &*self.base.as_ptr().add(4).cast::<AtomicU32>() }
    }

    /// Replays the queued writes, oldest first. Call before handling an exit that may
    /// depend on them.
    pub fn replay(&self, target: &dyn ReplayTarget) {
        let _one_consumer = self.replay.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let first = self.first().load(Ordering::Relaxed);
            // Acquire: the entry KVM wrote before publishing `last` is visible.
            let last = self.last().load(Ordering::Acquire);
            if first == last || first >= self.capacity {
                break;
            }
            // SAFETY: `first` < capacity, so the entry lies inside the mapped page.
            let e = unsafe {
                std::ptr::read_volatile(
                    self.base
                        .as_ptr()
                        .add(8 + first as usize * std::mem::size_of::<Entry>())
                        .cast::<Entry>(),
                )
            };
            let len = (e.len as usize).min(e.data.len());
            if e.pio != 0 {
                target.pio_write(e.phys_addr, &e.data[..len]);
            } else {
                target.mmio_write(e.phys_addr, &e.data[..len]);
            }
            // Release: KVM may reuse the slot only after we have read it.
            self.first()
                .store((first + 1) % self.capacity, Ordering::Release);
            self.replayed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many queued writes have been replayed (for tests and diagnostics).
    pub fn replayed(&self) -> u64 {
        self.replayed.load(Ordering::Relaxed)
    }
}

impl Drop for CoalescedRing {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: unmaps exactly the page mapped in `enable`.
            unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
        }
    }
}

/// Entries in a ring of one page: the page minus the two indices.
fn ring_capacity(page: usize) -> u32 {
    ((page - 8) / std::mem::size_of::<Entry>()) as u32
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    /// A ring over plain memory, with a test-side producer playing KVM.
    struct FakeRing {
        mem: Vec<u64>,
    }

    impl FakeRing {
        fn new() -> Self {
            FakeRing {
                mem: vec![0u64; 4096 / 8],
            }
        }
        fn ring(&mut self) -> CoalescedRing {
            CoalescedRing {
                base: NonNull::new(self.mem.as_mut_ptr().cast()).unwrap(),
                len: 4096,
                owned: false,
                capacity: ring_capacity(4096),
                replay: Mutex::new(()),
                replayed: AtomicU64::new(0),
            }
        }
    }

    fn produce(ring: &CoalescedRing, port: u64, value: u32) {
        let last = ring.last().load(Ordering::Relaxed);
        let e = Entry {
            phys_addr: port,
            len: 4,
            pio: 1,
            data: {
                let mut d = [0u8; 8];
                d[..4].copy_from_slice(&value.to_le_bytes());
                d
            },
        };
        // SAFETY: test memory of one page; `last` < capacity.
        unsafe {
            std::ptr::write(
                ring.base
                    .as_ptr()
                    .add(8 + last as usize * std::mem::size_of::<Entry>())
                    .cast::<Entry>(),
                e,
            )
        };
        ring.last()
            .store((last + 1) % ring.capacity, Ordering::Release);
    }

    #[derive(Default)]
    struct Recorder(StdMutex<Vec<(bool, u64, Vec<u8>)>>);
    impl ReplayTarget for Recorder {
        fn pio_write(&self, port: u64, data: &[u8]) {
            self.0.lock().unwrap().push((true, port, data.to_vec()));
        }
        fn mmio_write(&self, addr: u64, data: &[u8]) {
            self.0.lock().unwrap().push((false, addr, data.to_vec()));
        }
    }

    #[test]
    fn entry_layout_matches_kvm() {
        assert_eq!(
            std::mem::size_of::<Entry>(),
            std::mem::size_of::<kvm_bindings::kvm_coalesced_mmio>()
        );
        assert_eq!(ring_capacity(4096), 170);
    }

    #[test]
    fn replays_in_order_and_empties_the_ring() {
        let mut mem = FakeRing::new();
        let ring = mem.ring();
        produce(&ring, 0xcf8, 0x8000_0000);
        produce(&ring, 0xcf8, 0x8000_0800);
        let rec = Recorder::default();
        ring.replay(&rec);
        let got = rec.0.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![
                (true, 0xcf8, 0x8000_0000u32.to_le_bytes().to_vec()),
                (true, 0xcf8, 0x8000_0800u32.to_le_bytes().to_vec()),
            ]
        );
        assert_eq!(ring.replayed(), 2);
        ring.replay(&rec);
        assert_eq!(rec.0.lock().unwrap().len(), 2, "nothing replayed twice");
    }

    #[test]
    fn wraps_around_the_end_of_the_page() {
        let mut mem = FakeRing::new();
        let ring = mem.ring();
        let rec = Recorder::default();
        for i in 0..400u32 {
            produce(&ring, 0xcf8, i);
            if i % 7 == 0 {
                ring.replay(&rec);
            }
        }
        ring.replay(&rec);
        let got = rec.0.lock().unwrap();
        assert_eq!(got.len(), 400);
        for (i, (_, _, d)) in got.iter().enumerate() {
            assert_eq!(d, &(i as u32).to_le_bytes().to_vec());
        }
    }
}
