//! What a VM is made of: [`VmConfig`], the one description that the CLI flags build,
//! `conduit run --config FILE` reads and `PUT /api/v1/vm.create` accepts.
//!
//! JSON form (documented in `resources/vmconfig.schema.json`):
//!
//! ```json
//! {
//!   "kernel": { "path": "/boot/vmlinuz", "initramfs": "/boot/initrd.img",
//!               "cmdline": "console=ttyS0" },
//!   "cpus": 2,
//!   "memory": "1G",
//!   "hugepages": false,
//!   "serial": "stdio",
//!   "on_reboot": "exit",
//!   "devices": [ { "address": "0000:00:02.0" },
//!                { "address": "0000:00:07.0", "p2p": true, "rom": { "file": "/x.rom" } } ]
//! }
//! ```
//!
//! Exactly one of `kernel` and `payload` (raw 16-bit real-mode code, for tests and
//! diagnostics) is given; every other field has a default. `memory` is a byte count or a
//! size string (`512M`, `2G`); it is written back as a byte count. `serial` is `"stdio"`,
//! `"off"` or `{"file": PATH}`. Unknown fields are refused, and every refusal names the
//! field at fault (`memory: "12X" is not a size ...`, `cpus: must be 1..=254`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

/// Default kernel command line: console on COM1, reboot (not hang) on panic.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";
/// Default number of vCPUs.
pub const DEFAULT_CPUS: u8 = 1;
/// Default guest memory (512 MiB).
pub const DEFAULT_MEMORY: u64 = 512 << 20;
/// Most vCPUs a VM may have (the xAPIC ID 255 is the broadcast ID).
pub const MAX_CPUS: u8 = 254;
/// Least guest memory.
pub const MIN_MEMORY: u64 = boot::layout::MIN_RAM_SIZE;
const HUGEPAGE_SIZE: u64 = 2 << 20;

/// A configuration that cannot be used, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not JSON.
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// A field is unknown, missing, of the wrong type or out of range.
    #[error("{}{message}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
    Invalid {
        /// Path of the field (`cpus`, `kernel.path`, `devices[1].address`); empty for the
        /// whole document.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The field at fault (empty when the whole document is).
    pub fn field(&self) -> &str {
        match self {
            Self::Malformed(_) => "",
            Self::Invalid { field, .. } => field,
        }
    }
}

/// Where the guest's COM1 output goes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialMode {
    /// The VMM's stdout; host stdin feeds the guest.
    #[default]
    Stdio,
    /// Appended to a file (`{"file": PATH}`).
    File(PathBuf),
    /// Discarded.
    Off,
}

/// What to do when the guest reboots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnReboot {
    /// Stop the VM (`conduit run` exits with status 3).
    #[default]
    Exit,
    /// Rebuild the VM and boot it again.
    Restart,
}

/// Which kernel interface isolates passthrough devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IommuMode {
    /// iommufd with the VFIO device cdev when the host has both, else type1.
    #[default]
    Auto,
    /// The VFIO container with the type1 IOMMU (/dev/vfio/vfio and group files).
    Type1,
    /// iommufd (/dev/iommu) and the per-device cdev (/dev/vfio/devices/vfioN).
    Iommufd,
}

/// A Linux kernel to boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelConfig {
    /// bzImage or ELF vmlinux.
    pub path: PathBuf,
    /// Initramfs (cpio archive, optionally compressed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initramfs: Option<PathBuf>,
    /// Kernel command line.
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
}

/// Raw 16-bit real-mode code loaded at [`crate::vm::PAYLOAD_ADDR`] and entered with
/// CS=0, IP=0x1000. It runs on any KVM, including software ones that cannot boot Linux:
/// tests and diagnostics use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadConfig {
    /// The code, as a flat binary file.
    pub path: PathBuf,
}

/// A host PCI function passed through with VFIO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// PCI address, `DDDD:BB:DD.F` or `BB:DD.F` (domain 0).
    pub address: String,
    /// Also DMA-map the device's mmapped BAR areas in the IOMMU at their guest addresses, so
    /// that the other passthrough devices can DMA into them (peer-to-peer). Costs the time
    /// to map every BAR (about 0.3 s per GiB measured in the rig, type1).
    #[serde(default)]
    pub p2p: bool,
    /// The expansion ROM the guest sees.
    #[serde(default)]
    pub rom: RomConfig,
}

impl DeviceConfig {
    /// The device at `address` with the defaults: no p2p, its own ROM.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            p2p: false,
            rom: RomConfig::Device,
        }
    }
}

/// The expansion ROM of a passthrough device.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RomConfig {
    /// The device's own ROM, if it has one.
    #[default]
    Device,
    /// No ROM, even if the device has one.
    Off,
    /// The ROM image in this file (`{"file": PATH}`): 1 byte to 16 MiB.
    File(PathBuf),
}

/// Parses a `--device` argument: `ADDRESS[,p2p=on|off][,rom=PATH|off]`, ADDRESS a PCI
/// address or its sysfs path. The address is canonical when it parses (left as given
/// otherwise, for validation to name it).
pub fn parse_device_spec(spec: &str) -> Result<DeviceConfig, String> {
    let mut parts = spec.split(',');
    let addr = parts.next().unwrap_or_default();
    if addr.is_empty() {
        return Err(format!(
            "{spec:?}: the PCI address comes first (ADDRESS[,p2p=on][,rom=PATH|off])"
        ));
    }
    let name = Path::new(addr)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(addr);
    let address = crate::host::sysfs::normalize_address(name).unwrap_or_else(|_| addr.to_string());
    let mut device = DeviceConfig::new(address);
    let (mut p2p_seen, mut rom_seen) = (false, false);
    for opt in parts {
        let (key, value) = opt.split_once('=').unwrap_or((opt, ""));
        let seen = match key {
            "p2p" => {
                device.p2p = match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(format!("{spec}: p2p={value:?}: use p2p=on or p2p=off")),
                };
                &mut p2p_seen
            }
            "rom" => {
                device.rom = match value {
                    "" => {
                        return Err(format!(
                            "{spec}: rom= needs a file (rom=PATH) or off (rom=off)"
                        ))
                    }
                    "off" => RomConfig::Off,
                    path => RomConfig::File(PathBuf::from(path)),
                };
                &mut rom_seen
            }
            _ => {
                return Err(format!(
                    "{spec}: unknown option {opt:?} (the options are p2p=on|off and rom=PATH|off)"
                ))
            }
        };
        if std::mem::replace(seen, true) {
            return Err(format!("{spec}: {key}= is given twice"));
        }
    }
    Ok(device)
}

/// A whole VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// The Linux kernel to boot (exclusive with `payload`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelConfig>,
    /// Real-mode code to run instead of a kernel (exclusive with `kernel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<PayloadConfig>,
    /// Number of vCPUs, 1..=254.
    #[serde(default = "default_cpus", deserialize_with = "de_cpus")]
    pub cpus: u8,
    /// Guest RAM in bytes (JSON: a byte count or a size string such as `"1G"`).
    #[serde(
        rename = "memory",
        default = "default_memory",
        deserialize_with = "de_size"
    )]
    pub memory_bytes: u64,
    /// Back guest RAM with 2 MiB hugepages.
    #[serde(default)]
    pub hugepages: bool,
    /// Console.
    #[serde(default)]
    pub serial: SerialMode,
    /// Reboot policy.
    #[serde(default)]
    pub on_reboot: OnReboot,
    /// Host PCI devices passed through, in guest slot order.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// IOMMU interface for the passthrough devices.
    #[serde(default)]
    pub iommu: IommuMode,
}

fn default_cmdline() -> String {
    DEFAULT_CMDLINE.to_string()
}

fn default_cpus() -> u8 {
    DEFAULT_CPUS
}

fn default_memory() -> u64 {
    DEFAULT_MEMORY
}

fn cpus_message() -> String {
    format!("must be 1..={MAX_CPUS}")
}

fn de_cpus<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    // Any integer, so that 0 or 300 get the range message and not serde's "expected u8".
    let n = i64::deserialize(d)?;
    u8::try_from(n)
        .ok()
        .filter(|c| (1..=MAX_CPUS).contains(c))
        .ok_or_else(|| serde::de::Error::custom(format!("{}, got {n}", cpus_message())))
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d).map_err(|_| {
        serde::de::Error::custom(
            "must be a byte count or a size string with a K, M, G or T suffix (e.g. \"512M\")",
        )
    })? {
        Size::Bytes(n) => Ok(n),
        Size::Text(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

impl VmConfig {
    /// A VM booting `kernel` with the defaults: 1 vCPU, 512 MiB, console on stdio, the
    /// default command line, no devices.
    pub fn linux(kernel: impl Into<PathBuf>) -> Self {
        Self {
            kernel: Some(KernelConfig {
                path: kernel.into(),
                initramfs: None,
                cmdline: default_cmdline(),
            }),
            ..Self::empty()
        }
    }

    /// A VM running the real-mode code in the file `path` with the defaults.
    pub fn payload(path: impl Into<PathBuf>) -> Self {
        Self {
            payload: Some(PayloadConfig { path: path.into() }),
            ..Self::empty()
        }
    }

    fn empty() -> Self {
        Self {
            kernel: None,
            payload: None,
            cpus: DEFAULT_CPUS,
            memory_bytes: DEFAULT_MEMORY,
            hugepages: false,
            serial: SerialMode::Stdio,
            on_reboot: OnReboot::Exit,
            devices: Vec::new(),
            iommu: IommuMode::Auto,
        }
    }

    /// Parses and validates the JSON form.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ConfigError::Malformed(e.to_string()))?;
        if !value.is_object() {
            // serde would take a struct from an array too: refuse that here.
            return Err(ConfigError::invalid(
                "",
                "a VM configuration is a JSON object",
            ));
        }
        let config: VmConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = match e.path().to_string() {
                p if p == "." => String::new(),
                p => p,
            };
            let message = e.into_inner().to_string();
            // "unknown field `x`" names the field itself: report it on its parent object.
            let field = if message.starts_with("unknown field") {
                path.rsplit_once('.')
                    .map_or("", |(parent, _)| parent)
                    .to_string()
            } else {
                path
            };
            ConfigError::invalid(field, message)
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The JSON form (memory as a byte count).
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks the values (not the host): what `from_json` checks after parsing, for
    /// configurations built in Rust.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.kernel, &self.payload) {
            (Some(k), None) => {
                if k.path.as_os_str().is_empty() {
                    return Err(ConfigError::invalid("kernel.path", "must not be empty"));
                }
                if k.cmdline.contains('\0') {
                    return Err(ConfigError::invalid(
                        "kernel.cmdline",
                        "must not contain NUL bytes",
                    ));
                }
            }
            (None, Some(p)) => {
                if p.path.as_os_str().is_empty() {
                    return Err(ConfigError::invalid("payload.path", "must not be empty"));
                }
            }
            (None, None) => {
                return Err(ConfigError::invalid(
                    "kernel",
                    "missing: give a kernel (or a payload)",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "payload",
                    "give either a kernel or a payload, not both",
                ))
            }
        }
        if !(1..=MAX_CPUS).contains(&self.cpus) {
            return Err(ConfigError::invalid(
                "cpus",
                format!("{}, got {}", cpus_message(), self.cpus),
            ));
        }
        if self.memory_bytes < MIN_MEMORY {
            return Err(ConfigError::invalid(
                "memory",
                format!(
                    "{} bytes is less than the minimum of {} MiB",
                    self.memory_bytes,
                    MIN_MEMORY >> 20
                ),
            ));
        }
        let align = if self.hugepages { HUGEPAGE_SIZE } else { 4096 };
        if !self.memory_bytes.is_multiple_of(align) {
            return Err(ConfigError::invalid(
                "memory",
                format!(
                    "{} bytes is not a multiple of {}{}",
                    self.memory_bytes,
                    if self.hugepages { "2 MiB" } else { "4 KiB" },
                    if self.hugepages {
                        " (hugepages is set)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        if let SerialMode::File(p) = &self.serial {
            if p.as_os_str().is_empty() {
                return Err(ConfigError::invalid("serial.file", "must not be empty"));
            }
        }
        let mut seen: Vec<String> = Vec::new();
        for (i, d) in self.devices.iter().enumerate() {
            let field = format!("devices[{i}].address");
            let canonical = crate::host::sysfs::normalize_address(&d.address).map_err(|_| {
                ConfigError::invalid(
                    &field,
                    format!(
                        "{:?} is not a PCI address (expected DDDD:BB:DD.F or BB:DD.F)",
                        d.address
                    ),
                )
            })?;
            if seen.contains(&canonical) {
                return Err(ConfigError::invalid(
                    field,
                    format!("{canonical} is listed twice"),
                ));
            }
            if let RomConfig::File(p) = &d.rom {
                if p.as_os_str().is_empty() {
                    return Err(ConfigError::invalid(
                        format!("devices[{i}].rom.file"),
                        "must not be empty",
                    ));
                }
            }
            seen.push(canonical);
        }
        Ok(())
    }

    /// Checks that the files the VM reads exist: what `Vm::create` checks on the host.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        let file = |field: &str, p: &Path| -> Result<(), ConfigError> {
            match std::fs::metadata(p) {
                Ok(m) if m.is_file() => Ok(()),
                Ok(_) => Err(ConfigError::invalid(
                    field,
                    format!("{} is not a regular file", p.display()),
                )),
                Err(e) => Err(ConfigError::invalid(field, format!("{}: {e}", p.display()))),
            }
        };
        if let Some(k) = &self.kernel {
            file("kernel.path", &k.path)?;
            if let Some(i) = &k.initramfs {
                file("kernel.initramfs", i)?;
            }
        }
        if let Some(p) = &self.payload {
            file("payload.path", &p.path)?;
        }
        for (i, d) in self.devices.iter().enumerate() {
            if let RomConfig::File(p) = &d.rom {
                devices::vfio::rom::check_rom_file(&d.address, p).map_err(|e| {
                    ConfigError::invalid(format!("devices[{i}].rom.file"), e.to_string())
                })?;
            }
        }
        Ok(())
    }
}

/// Errors in a size such as `512M`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a size: use a number with an optional K, M, G or T suffix (e.g. 512M, 2G)")]
pub struct SizeError(pub String);

/// Parses `512M`, `2G`, `1024K`, `4096` (bytes) and the same with `iB`/`B` suffixes.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let err = || SizeError(s.to_string());
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(err()),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits.parse().map_err(|_| err())?;
    n.checked_mul(1u64 << shift).ok_or_else(err)
}

/// Parses `stdio`, `off` or `file=PATH` (the `--serial` flag).
pub fn parse_serial(s: &str) -> Result<SerialMode, String> {
    match s {
        "stdio" => Ok(SerialMode::Stdio),
        "off" => Ok(SerialMode::Off),
        _ => match s.strip_prefix("file=") {
            Some(p) if !p.is_empty() => Ok(SerialMode::File(PathBuf::from(p))),
            _ => Err(format!(
                "invalid serial mode '{s}': use stdio, off or file=PATH"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn serial_modes() {
        assert_eq!(parse_serial("stdio"), Ok(SerialMode::Stdio));
        assert_eq!(parse_serial("off"), Ok(SerialMode::Off));
        assert_eq!(
            parse_serial("file=/tmp/x"),
            Ok(SerialMode::File("/tmp/x".into()))
        );
        assert!(parse_serial("file=").is_err());
        assert!(parse_serial("tty").is_err());
    }

    fn err(json: &str) -> ConfigError {
        VmConfig::from_json(json).expect_err(json)
    }

    fn msg(json: &str) -> String {
        err(json).to_string()
    }

    #[test]
    fn minimal_json_takes_the_defaults() {
        let c = VmConfig::from_json(r#"{"kernel": {"path": "/k"}}"#).unwrap();
        assert_eq!(c, VmConfig::linux("/k"));
        assert_eq!(c.cpus, 1);
        assert_eq!(c.memory_bytes, 512 << 20);
        assert_eq!(c.serial, SerialMode::Stdio);
        assert_eq!(c.kernel.unwrap().cmdline, DEFAULT_CMDLINE);
    }

    #[test]
    fn full_json_round_trips() {
        let text = r#"{
            "kernel": {"path": "/k", "initramfs": "/i", "cmdline": "console=ttyS0"},
            "cpus": 4, "memory": "2G", "hugepages": true,
            "serial": {"file": "/tmp/console.log"}, "on_reboot": "restart",
            "devices": [{"address": "0000:17:00.0"}, {"address": "18:00.0"}]
        }"#;
        let c = VmConfig::from_json(text).unwrap();
        assert_eq!(c.cpus, 4);
        assert_eq!(c.memory_bytes, 2 << 30);
        assert!(c.hugepages);
        assert_eq!(c.serial, SerialMode::File("/tmp/console.log".into()));
        assert_eq!(c.on_reboot, OnReboot::Restart);
        assert_eq!(c.devices.len(), 2);
        let again = VmConfig::from_json(&c.to_json()).unwrap();
        assert_eq!(again, c);
        let v: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(v["memory"], 2u64 << 30, "memory is written as bytes");
        let p = VmConfig::from_json(
            r#"{"payload": {"path": "/p.bin"}, "serial": "off", "memory": 67108864}"#,
        )
        .unwrap();
        assert_eq!(p.payload.unwrap().path, PathBuf::from("/p.bin"));
        assert_eq!(p.serial, SerialMode::Off);
        assert_eq!(p.memory_bytes, 64 << 20);
    }

    #[test]
    fn refusals_name_the_field() {
        let k = r#""kernel": {"path": "/k"}"#;
        let cases: &[(String, &str, &str)] = &[
            (
                format!(r#"{{{k}, "memory": "12X"}}"#),
                "memory",
                "\"12X\" is not a size",
            ),
            (
                format!(r#"{{{k}, "memory": true}}"#),
                "memory",
                "byte count",
            ),
            (format!(r#"{{{k}, "memory": 4096}}"#), "memory", "minimum"),
            (
                format!(r#"{{{k}, "memory": 67109376}}"#),
                "memory",
                "multiple of 4 KiB",
            ),
            (
                format!(r#"{{{k}, "memory": "65M", "hugepages": true}}"#),
                "memory",
                "2 MiB",
            ),
            (format!(r#"{{{k}, "cpus": 0}}"#), "cpus", "must be 1..=254"),
            (
                format!(r#"{{{k}, "cpus": 255}}"#),
                "cpus",
                "must be 1..=254",
            ),
            (format!(r#"{{{k}, "cpus": -1}}"#), "cpus", "must be 1..=254"),
            (format!(r#"{{{k}, "cpus": "2"}}"#), "cpus", "invalid type"),
            (
                format!(r#"{{{k}, "serial": "tty"}}"#),
                "serial",
                "unknown variant",
            ),
            (
                format!(r#"{{{k}, "serial": {{"file": ""}}}}"#),
                "serial.file",
                "empty",
            ),
            (
                format!(r#"{{{k}, "on_reboot": "halt"}}"#),
                "on_reboot",
                "unknown variant",
            ),
            (
                format!(r#"{{{k}, "devices": [{{"address": "xyz"}}]}}"#),
                "devices[0].address",
                "not a PCI address",
            ),
            (
                format!(
                    r#"{{{k}, "devices": [{{"address": "00:02.0"}}, {{"address": "0000:00:02.0"}}]}}"#
                ),
                "devices[1].address",
                "listed twice",
            ),
            (
                format!(r#"{{{k}, "devices": [{{"addr": "00:02.0"}}]}}"#),
                "devices[0]",
                "unknown field `addr`",
            ),
            (
                format!(r#"{{{k}, "color": "red"}}"#),
                "",
                "unknown field `color`",
            ),
            (
                r#"{"kernel": {"path": "/k", "cmd": "x"}}"#.into(),
                "kernel",
                "unknown field `cmd`",
            ),
            (r#"{"kernel": {}}"#.into(), "kernel", "missing field `path`"),
            (r#"{"cpus": 2}"#.into(), "kernel", "missing"),
            (
                format!(r#"{{{k}, "payload": {{"path": "/p"}}}}"#),
                "payload",
                "not both",
            ),
        ];
        for (json, field, needle) in cases {
            let e = err(json);
            assert_eq!(e.field(), *field, "{json}: {e}");
            let text = e.to_string();
            assert!(text.contains(needle), "{json}: {text:?} lacks {needle:?}");
            if !field.is_empty() {
                assert!(text.starts_with(&format!("{field}: ")), "{text}");
            }
        }
    }

    #[test]
    fn malformed_json_is_not_a_field_error() {
        assert!(matches!(err("{"), ConfigError::Malformed(_)));
        assert!(matches!(err("not json"), ConfigError::Malformed(_)));
        assert!(matches!(
            err(r#"{"kernel": {"path": "/k"}} trailing"#),
            ConfigError::Malformed(_)
        ));
        assert_eq!(msg("[]"), "a VM configuration is a JSON object");
        assert_eq!(msg("7"), "a VM configuration is a JSON object");
    }

    #[test]
    fn device_specs_parse_with_their_options() {
        let d = parse_device_spec("00:07.0").unwrap();
        assert_eq!(d, DeviceConfig::new("0000:00:07.0"));
        let d = parse_device_spec("/sys/bus/pci/devices/0000:00:07.0,p2p=on").unwrap();
        assert_eq!((d.address.as_str(), d.p2p), ("0000:00:07.0", true));
        assert_eq!(d.rom, RomConfig::Device);
        let d = parse_device_spec("0000:00:06.0,rom=/tmp/edu.rom,p2p=off").unwrap();
        assert!(!d.p2p);
        assert_eq!(d.rom, RomConfig::File("/tmp/edu.rom".into()));
        assert_eq!(
            parse_device_spec("0000:00:04.0,rom=off").unwrap().rom,
            RomConfig::Off
        );
        // A file called "off" is still reachable.
        assert_eq!(
            parse_device_spec("0000:00:04.0,rom=./off").unwrap().rom,
            RomConfig::File("./off".into())
        );
        // An address that does not parse is left for validation to name.
        assert_eq!(parse_device_spec("xyz,p2p=on").unwrap().address, "xyz");
        for (spec, needle) in [
            ("0000:00:07.0,p2p=yes", "p2p=\"yes\": use p2p=on or p2p=off"),
            ("0000:00:07.0,p2p", "p2p=\"\": use p2p=on or p2p=off"),
            (
                "0000:00:07.0,rom=",
                "rom= needs a file (rom=PATH) or off (rom=off)",
            ),
            ("0000:00:07.0,rombar=0", "unknown option \"rombar=0\""),
            ("0000:00:07.0,p2p=on,p2p=off", "p2p= is given twice"),
            ("0000:00:07.0,rom=a,rom=b", "rom= is given twice"),
            (",p2p=on", "the PCI address comes first"),
        ] {
            let e = parse_device_spec(spec).unwrap_err();
            assert!(e.contains(needle), "{spec}: {e}");
            assert!(
                e.contains(spec),
                "{spec}: the message names the argument: {e}"
            );
        }
    }

    #[test]
    fn device_options_in_json() {
        let c = VmConfig::from_json(
            r#"{"kernel": {"path": "/k"}, "devices": [
                {"address": "00:07.0", "p2p": true, "rom": {"file": "/x.rom"}},
                {"address": "00:04.0", "rom": "off"},
                {"address": "00:02.0"}]}"#,
        )
        .unwrap();
        assert!(c.devices[0].p2p);
        assert_eq!(c.devices[0].rom, RomConfig::File("/x.rom".into()));
        assert_eq!(c.devices[1].rom, RomConfig::Off);
        assert_eq!(c.devices[2], DeviceConfig::new("00:02.0"));
        assert_eq!(VmConfig::from_json(&c.to_json()).unwrap(), c);
        let v: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(v["devices"][2]["p2p"], false);
        assert_eq!(v["devices"][2]["rom"], "device");
        let e = err(
            r#"{"kernel": {"path": "/k"}, "devices": [{"address": "00:07.0", "rom": {"file": ""}}]}"#,
        );
        assert_eq!(e.field(), "devices[0].rom.file", "{e}");
        let e = err(
            r#"{"kernel": {"path": "/k"}, "devices": [{"address": "00:07.0", "rom": "none"}]}"#,
        );
        assert_eq!(e.field(), "devices[0].rom", "{e}");
    }

    #[test]
    fn rom_files_are_checked_with_the_device_named() {
        let mut c = VmConfig::linux("/");
        c.kernel = None;
        c.payload = Some(PayloadConfig {
            path: std::env::current_exe().unwrap(),
        });
        c.devices = vec![
            DeviceConfig::new("0000:00:02.0"),
            DeviceConfig {
                rom: RomConfig::File("/nonexistent/edu.rom".into()),
                ..DeviceConfig::new("0000:00:06.0")
            },
        ];
        let e = c.check_files().unwrap_err();
        assert_eq!(e.field(), "devices[1].rom.file");
        let text = e.to_string();
        assert!(
            text.starts_with("devices[1].rom.file: 0000:00:06.0: cannot read the ROM file /nonexistent/edu.rom: "),
            "{text}"
        );
        let empty = std::env::temp_dir().join(format!("conduit-empty-rom-{}", std::process::id()));
        std::fs::write(&empty, b"").unwrap();
        c.devices[1].rom = RomConfig::File(empty.clone());
        let text = c.check_files().unwrap_err().to_string();
        std::fs::remove_file(&empty).unwrap();
        assert!(text.ends_with("is empty"), "{text}");
    }

    #[test]
    fn missing_files_are_named() {
        let c = VmConfig::linux("/nonexistent/conduit-kernel");
        let e = c.check_files().unwrap_err();
        assert_eq!(e.field(), "kernel.path");
        assert!(e.to_string().contains("/nonexistent/conduit-kernel"), "{e}");
        let c = VmConfig::linux("/");
        assert!(c
            .check_files()
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
    }
}
