//! What describes a VM, from text: the VmConfig JSON (API body, `run --config`), the
//! `conduit run` flags, and the pieces they use (sizes, serial modes, PCI addresses,
//! `--gpus` specs, PCI ids). A config that parses is valid and survives its own JSON form;
//! a refusal names the field or flag at fault; the small parsers give canonical forms that
//! parse back to themselves.
//!
//! Input: text in up to three parts separated by NUL bytes: the JSON, the `run` flags one a
//! line, words for the small parsers one a line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm::config::{parse_serial, parse_size, ConfigError, VmConfig};
use vmm::host::flavor::parse_spec;
use vmm::host::sysfs::{normalize_address, PciId};

fn json(text: &str) {
    match VmConfig::from_json(text) {
        Ok(c) => {
            if let Err(e) = c.validate() {
                panic!("parsed but invalid: {e}");
            }
            let again = VmConfig::from_json(&c.to_json())
                .unwrap_or_else(|e| panic!("its own JSON form is refused: {e}\n{}", c.to_json()));
            assert_eq!(again, c, "JSON round trip changed the config");
        }
        Err(ConfigError::Malformed(m)) => assert!(!m.is_empty()),
        Err(e @ ConfigError::Invalid { .. }) => assert!(!e.to_string().is_empty()),
    }
}

fn run_flags(args: &[&str]) {
    // `--config FILE` would read a file the fuzzer names.
    if args.iter().any(|a| a.starts_with("--config")) {
        return;
    }
    match vmm::cli::run_config(args.iter().copied()) {
        Ok(c) => {
            if let Err(e) = c.validate() {
                panic!("flags gave an invalid config: {e}");
            }
        }
        Err(e) => assert!(!e.is_empty()),
    }
}

fn words(w: &str) {
    if let Ok(n) = parse_size(w) {
        assert_eq!(parse_size(&n.to_string()), Ok(n), "size {w:?}");
    }
    let _ = parse_serial(w);
    if let Ok(a) = normalize_address(w) {
        assert_eq!(
            normalize_address(&a).ok().as_ref(),
            Some(&a),
            "address {w:?}"
        );
    }
    if let Ok(id) = PciId::parse(w) {
        assert_eq!(PciId::parse(&id.to_string()).ok(), Some(id), "id {w:?}");
    }
    match parse_spec(w) {
        Ok(spec) => assert!(
            spec.count > 0 && !spec.ids.is_empty(),
            "spec {w:?}: {spec:?}"
        ),
        Err(e) => assert!(e.to_string().contains(&format!("{w:?}")), "{e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\0');
    json(parts.next().unwrap_or_default());
    let args: Vec<&str> = parts
        .next()
        .map(|a| a.lines().collect())
        .unwrap_or_default();
    if !args.is_empty() {
        run_flags(&args);
    }
    for w in parts.next().unwrap_or_default().lines() {
        words(w);
    }
});
