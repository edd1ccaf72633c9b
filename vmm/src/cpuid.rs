//! Per-vCPU CPUID: the host's supported set, with APIC ids and topology leaves that describe
//! `n` single-threaded cores in one package, so every vCPU comes online in Linux.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_TOPOLOGY: u32 = 0x4;
const LEAF_X2APIC_TOPOLOGY: u32 = 0xb;
const LEAF_V2_TOPOLOGY: u32 = 0x1f;
const LEAF_AMD_SIZES: u32 = 0x8000_0008;
const LEAF_AMD_EXT_APIC: u32 = 0x8000_001e;

const ECX_HYPERVISOR: u32 = 1 << 31;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const EDX_HTT: u32 = 1 << 28;

/// Topology level types in leaves 0xB/0x1F.
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Bits needed to number `n` APIC ids.
fn id_bits(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Rewrites `cpuid` (the host's supported set) for vCPU `index` of `count`.
pub fn configure(cpuid: &mut CpuId, index: u32, count: u32) {
    let apic_id = index;
    let core_bits = id_bits(count);
    for e in cpuid.as_mut_slice().iter_mut() {
        match e.function {
            LEAF_FEATURES => {
                // EBX: APIC id [31:24], logical processors per package [23:16], CLFLUSH 8 qwords.
                e.ebx = (apic_id << 24) | (count.min(255) << 16) | (8 << 8);
                e.ecx |= ECX_HYPERVISOR | ECX_TSC_DEADLINE;
                if count > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            // EAX[31:26]: cores per package - 1; EAX[25:14]: threads sharing this cache - 1.
            LEAF_CACHE_TOPOLOGY if e.eax & 0x1f != 0 => {
                let level = (e.eax >> 5) & 7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                e.eax = (e.eax & 0x3ff) | (sharing.min(0xfff) << 14) | ((count - 1).min(63) << 26);
            }
            LEAF_X2APIC_TOPOLOGY | LEAF_V2_TOPOLOGY => {
                topology_subleaf(e, apic_id, count, core_bits)
            }
            LEAF_AMD_SIZES => {
                // ECX[7:0]: cores - 1; ECX[15:12]: APIC id bits.
                e.ecx = (e.ecx & !0xf0ff) | (core_bits << 12) | (count - 1).min(255);
            }
            LEAF_AMD_EXT_APIC => {
                e.eax = apic_id;
                e.ebx &= !0xff00; // one thread per core
                e.ecx &= !0x7ff; // node 0, one node per package
            }
            _ => {}
        }
    }
}

fn topology_subleaf(e: &mut kvm_cpuid_entry2, apic_id: u32, count: u32, core_bits: u32) {
    e.edx = apic_id;
    match e.index {
        0 => {
            e.eax = 0;
            e.ebx = 1;
            e.ecx = (LEVEL_SMT << 8) | e.index;
        }
        1 => {
            e.eax = core_bits;
            e.ebx = count;
            e.ecx = (LEVEL_CORE << 8) | e.index;
        }
        _ => {
            e.eax = 0;
            e.ebx = 0;
            e.ecx = e.index;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    #[test]
    fn apic_ids_and_topology_for_each_vcpu() {
        let base = [
            entry(LEAF_FEATURES, 0),
            entry(LEAF_X2APIC_TOPOLOGY, 0),
            entry(LEAF_X2APIC_TOPOLOGY, 1),
            entry(LEAF_X2APIC_TOPOLOGY, 2),
            entry(LEAF_AMD_SIZES, 0),
        ];
        for (i, n) in [(0, 1), (1, 2), (2, 3), (5, 8)] {
            let mut cpuid = CpuId::from_entries(&base).unwrap();
            configure(&mut cpuid, i, n);
            let s = cpuid.as_slice();
            assert_eq!(s[0].ebx >> 24, i, "leaf 1 APIC id");
            assert_eq!((s[0].ebx >> 16) & 0xff, n);
            assert_eq!(s[0].edx & EDX_HTT != 0, n > 1);
            assert_ne!(s[0].ecx & ECX_HYPERVISOR, 0);
            assert_eq!(s[1].edx, i, "x2APIC id");
            assert_eq!((s[1].ecx >> 8) & 0xff, LEVEL_SMT);
            assert_eq!(s[2].ebx, n, "logical processors at core level");
            assert!(1u32 << s[2].eax >= n, "shift covers every APIC id");
            assert_eq!((s[3].ecx >> 8) & 0xff, 0, "terminating subleaf");
            assert_eq!(s[4].ecx & 0xff, n - 1);
        }
    }

    #[test]
    fn id_bits_is_ceil_log2() {
        assert_eq!(id_bits(1), 0);
        assert_eq!(id_bits(2), 1);
        assert_eq!(id_bits(3), 2);
        assert_eq!(id_bits(4), 2);
        assert_eq!(id_bits(5), 3);
    }
}
