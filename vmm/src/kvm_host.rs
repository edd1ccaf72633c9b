//! Opening `/dev/kvm` and checking that the host can run a stock Linux guest, with errors
//! that say what is wrong and how to fix it.

use std::path::Path;

use kvm_ioctls::{Cap, Kvm};

/// Why the host's KVM cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KvmHostError {
    /// `/dev/kvm` does not exist.
    #[error("/dev/kvm does not exist: load kvm_intel or kvm_amd (modprobe kvm_intel / modprobe kvm_amd) and enable VT-x/AMD-V in the firmware")]
    Missing,
    /// `/dev/kvm` cannot be opened.
    #[error("cannot open /dev/kvm: {0} (run as root or add the user to the 'kvm' group)")]
    Open(#[source] kvm_ioctls::Error),
    /// The KVM API version is not 12.
    #[error("/dev/kvm speaks KVM API version {0}, Conduit needs 12")]
    ApiVersion(i32),
    /// A capability Conduit relies on is missing.
    #[error("/dev/kvm lacks the {0} capability Conduit needs")]
    MissingCap(&'static str),
    /// The host KVM is a software implementation that cannot run an unmodified kernel.
    #[error("/dev/kvm is provided by kvm_pvm (software, pagetable-based virtualization): it runs only PVM-enabled guest kernels, not a stock Linux kernel. Use a host with VT-x/AMD-V and kvm_intel/kvm_amd loaded, or boot inside the test rig (tests/rig/run boot)")]
    SoftwareOnly,
}

/// Capabilities every Conduit VM needs.
const REQUIRED_CAPS: &[(Cap, &str)] = &[
    (Cap::Irqchip, "IRQCHIP"),
    (Cap::UserMemory, "USER_MEMORY"),
    (Cap::SetTssAddr, "SET_TSS_ADDR"),
    (Cap::ExtCpuid, "EXT_CPUID"),
    (Cap::Irqfd, "IRQFD"),
    (Cap::IrqRouting, "IRQ_ROUTING"),
    (Cap::Pit2, "PIT2"),
    (Cap::Ioeventfd, "IOEVENTFD"),
    (Cap::ImmediateExit, "IMMEDIATE_EXIT"),
];

/// Opens `/dev/kvm` and checks its API version and capabilities.
pub fn open() -> Result<Kvm, KvmHostError> {
    if !Path::new("/dev/kvm").exists() {
        return Err(KvmHostError::Missing);
    }
    let kvm = Kvm::new().map_err(KvmHostError::Open)?;
    let version = kvm.get_api_version();
    if version != 12 {
        return Err(KvmHostError::ApiVersion(version));
    }
    for (cap, name) in REQUIRED_CAPS {
        if !kvm.check_extension(*cap) {
            return Err(KvmHostError::MissingCap(name));
        }
    }
    Ok(kvm)
}

/// Checks that the KVM behind `/dev/kvm` runs unmodified kernels (hardware virtualization),
/// given the sysfs module directory (normally `/sys/module`).
pub fn check_runs_stock_linux(sys_module: &Path) -> Result<(), KvmHostError> {
    let hardware = ["kvm_intel", "kvm_amd"]
        .iter()
        .any(|m| sys_module.join(m).exists());
    if !hardware && sys_module.join("kvm_pvm").exists() {
        return Err(KvmHostError::SoftwareOnly);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvm_without_hardware_module_is_refused_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("conduit-sysmod-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("kvm_pvm")).unwrap();
        let err = check_runs_stock_linux(&dir).unwrap_err();
        assert!(err.to_string().contains("PVM-enabled"), "{err}");
        std::fs::create_dir_all(dir.join("kvm_amd")).unwrap();
        assert!(check_runs_stock_linux(&dir).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
