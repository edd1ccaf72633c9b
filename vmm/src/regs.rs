//! x86 register state of a vCPU at boot: the boot CPU enters the kernel in 64-bit mode (Linux
//! boot protocol) or 32-bit protected mode (PVH); every vCPU gets its CPUID, MSRs and LAPIC
//! LINT pins set, and the others wait for INIT/SIPI from the guest.

use boot::x86::SegmentDescriptor;
use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, Msrs};
use kvm_ioctls::VcpuFd;

/// Errors while setting up vCPU registers.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// A KVM vCPU ioctl failed.
    #[error("vCPU {index}: {what} failed: {source}")]
    Ioctl {
        /// vCPU index.
        index: u32,
        /// Which ioctl.
        what: &'static str,
        /// Underlying error.
        source: kvm_ioctls::Error,
    },
    /// KVM set fewer MSRs than asked.
    #[error("vCPU {index}: KVM accepted only {set} of {wanted} boot MSRs")]
    Msrs {
        /// vCPU index.
        index: u32,
        /// MSRs set.
        set: usize,
        /// MSRs asked for.
        wanted: usize,
    },
}

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
/// Fast-string operations enabled.
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRs enabled, default type write-back.
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

/// LAPIC LVT LINT0 / LINT1 register offsets and delivery modes.
const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;

fn ioctl<T>(
    index: u32,
    what: &'static str,
    r: Result<T, kvm_ioctls::Error>,
) -> Result<T, RegsError> {
    r.map_err(|source| RegsError::Ioctl {
        index,
        what,
        source,
    })
}

/// Sets the MSRs Linux expects a firmware to have initialised.
pub fn setup_msrs(vcpu: &VcpuFd, index: u32) -> Result<(), RegsError> {
    let entries: Vec<kvm_msr_entry> = [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ]
    .iter()
    .map(|&(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect();
    let msrs = Msrs::from_entries(&entries).map_err(|_| RegsError::Msrs {
        index,
        set: 0,
        wanted: entries.len(),
    })?;
    let set = ioctl(index, "KVM_SET_MSRS", vcpu.set_msrs(&msrs))?;
    if set != entries.len() {
        return Err(RegsError::Msrs {
            index,
            set,
            wanted: entries.len(),
        });
    }
    Ok(())
}

/// Routes LINT0 to ExtINT (the PIC) and LINT1 to NMI, as a PC firmware does.
pub fn setup_lapic(vcpu: &VcpuFd, index: u32) -> Result<(), RegsError> {
    let mut lapic = ioctl(index, "KVM_GET_LAPIC", vcpu.get_lapic())?;
    for (reg, mode) in [
        (APIC_LVT_LINT0, APIC_MODE_EXTINT),
        (APIC_LVT_LINT1, APIC_MODE_NMI),
    ] {
        let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[reg + i] as u8);
        let v = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            lapic.regs[reg + i] = *b as libc::c_char;
        }
    }
    ioctl(index, "KVM_SET_LAPIC", vcpu.set_lapic(&lapic))
}

/// Default x87/SSE state.
pub fn setup_fpu(vcpu: &VcpuFd, index: u32) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    ioctl(index, "KVM_SET_FPU", vcpu.set_fpu(&fpu))
}

fn kvm_segment_from(d: &SegmentDescriptor) -> kvm_segment {
    kvm_segment {
        base: d.base,
        limit: d.limit,
        selector: d.selector,
        type_: d.type_,
        present: d.present,
        dpl: d.dpl,
        db: d.db,
        s: d.s,
        l: d.l,
        g: d.g,
        avl: d.avl,
        unusable: u8::from(d.present == 0),
        padding: 0,
    }
}

/// Where and how the boot CPU starts.
pub enum BootCpu {
    /// A kernel entry prepared by the `boot` crate (64-bit Linux boot protocol or PVH).
    Kernel(boot::x86::BootCpuState),
    /// 16-bit real mode at CS=0 (test payloads).
    RealMode {
        /// Entry point (below 64 KiB).
        entry: u64,
    },
}

/// Puts the boot CPU at the entry point.
pub fn setup_boot_cpu(vcpu: &VcpuFd, index: u32, state: &BootCpu) -> Result<(), RegsError> {
    let mut sregs = ioctl(index, "KVM_GET_SREGS", vcpu.get_sregs())?;
    let regs = match state {
        BootCpu::Kernel(s) => {
            sregs.gdt.base = s.gdt.base;
            sregs.gdt.limit = s.gdt.limit;
            sregs.idt.base = s.idt.base;
            sregs.idt.limit = s.idt.limit;
            sregs.cs = kvm_segment_from(&s.code);
            let data = kvm_segment_from(&s.data);
            sregs.ds = data;
            sregs.es = data;
            sregs.fs = data;
            sregs.gs = data;
            sregs.ss = data;
            sregs.tr = kvm_segment_from(&s.tss);
            sregs.cr0 = s.cr0;
            sregs.cr3 = s.cr3;
            sregs.cr4 = s.cr4;
            sregs.efer = s.efer;
            kvm_regs {
                rip: s.rip,
                rsp: s.rsp,
                rbp: s.rbp,
                rsi: s.rsi,
                rbx: s.rbx,
                rflags: s.rflags,
                ..Default::default()
            }
        }
        BootCpu::RealMode { entry } => {
            sregs.cs.base = 0;
            sregs.cs.selector = 0;
            kvm_regs {
                rip: *entry,
                rflags: 0x2,
                ..Default::default()
            }
        }
    };
    ioctl(index, "KVM_SET_SREGS", vcpu.set_sregs(&sregs))?;
    ioctl(index, "KVM_SET_REGS", vcpu.set_regs(&regs))
}
