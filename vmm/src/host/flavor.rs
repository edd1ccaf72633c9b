//! Flavors: `--gpus 10de:2335x4` or `--gpus h200x4` picks N devices ready for passthrough.
//!
//! A device is ready when [`Inventory::readiness`] says so (on vfio-pci, viable group). Among
//! the ready devices of the id, the NUMA node with the most of them is used first (ties: the
//! node holding the lowest address), lowest addresses first; only when it has too few do the
//! next nodes fill in. A name that stands for several ids (`h100`: SXM5 and PCIe) never mixes
//! them: the first id, in the family's order, with enough ready devices is used.

use std::collections::BTreeMap;
use std::path::Path;

use super::inventory::{Inventory, PciDevice};
use super::names::{family, FAMILIES};
use super::sysfs::{normalize_address, HostRoot, PciId};
use super::HostError;

/// A parsed `--gpus` spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuSpec {
    /// Acceptable ids, in order of preference.
    pub ids: Vec<PciId>,
    /// How many devices.
    pub count: usize,
}

/// Parses `VENDOR:DEVICExN` or `NAMExN` (`x1` may be left out).
pub fn parse_spec(spec: &str) -> Result<GpuSpec, HostError> {
    let bad = |why: String| HostError::BadSpec {
        spec: spec.to_string(),
        why,
    };
    let t = spec.trim();
    let (head, count) = match t.rfind(['x', 'X']) {
        Some(i) if t[i + 1..].chars().all(|c| c.is_ascii_digit()) && i + 1 < t.len() => {
            let n: usize = t[i + 1..]
                .parse()
                .map_err(|_| bad(format!("{:?} is not a count", &t[i + 1..])))?;
            (&t[..i], n)
        }
        _ => (t, 1),
    };
    if count == 0 {
        return Err(bad("the count must be at least 1".to_string()));
    }
    let ids = if head.contains(':') {
        vec![PciId::parse(head).map_err(|e| bad(e.to_string()))?]
    } else {
        let f = family(head).ok_or_else(|| {
            let known: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
            bad(format!(
                "unknown name {head:?} (known: {})",
                known.join(", ")
            ))
        })?;
        f.ids.to_vec()
    };
    Ok(GpuSpec { ids, count })
}

/// Picks the devices for `spec` on `root`: their addresses (`dddd:bb:dd.f`), in address order.
pub fn select_devices(root: &HostRoot, spec: &str) -> Result<Vec<String>, HostError> {
    select_devices_besides(root, spec, &[])
}

/// [`select_devices`] among the devices not in `taken` (the `--device` arguments of the same
/// `conduit run`: addresses or sysfs paths), so `--device X --gpus h200x4` passes X and four
/// more. Entries of `taken` that name no PCI address are ignored.
pub fn select_devices_besides(
    root: &HostRoot,
    spec: &str,
    taken: &[String],
) -> Result<Vec<String>, HostError> {
    let parsed = parse_spec(spec)?;
    let mut inv = Inventory::read(root)?;
    let taken: Vec<String> = taken
        .iter()
        .filter_map(|t| {
            let last = Path::new(t).file_name()?.to_str()?;
            normalize_address(last).ok()
        })
        .collect();
    inv.devices.retain(|d| !taken.contains(&d.address));
    select_from(&inv, spec, &parsed)
}

/// [`select_devices`] on an inventory already read.
pub fn select_from(
    inv: &Inventory,
    spec: &str,
    parsed: &GpuSpec,
) -> Result<Vec<String>, HostError> {
    let mut found = Vec::new();
    let mut best_ready = 0;
    for id in &parsed.ids {
        let of_id: Vec<&PciDevice> = inv.devices.iter().filter(|d| d.id == *id).collect();
        let mut ready = Vec::new();
        for d in &of_id {
            let r = inv.readiness(d);
            let node = d.numa_node.map_or("NUMA node unknown".to_string(), |n| {
                format!("NUMA node {n}")
            });
            if r.ready() {
                found.push((d.address.clone(), format!("{id} ready ({node})")));
                ready.push(*d);
            } else {
                found.push((
                    d.address.clone(),
                    format!("{id} not ready: {}", r.reasons.join("; ")),
                ));
            }
        }
        best_ready = best_ready.max(ready.len());
        if ready.len() >= parsed.count {
            return Ok(pick(ready, parsed.count));
        }
    }
    Err(HostError::NotEnoughReady {
        spec: spec.to_string(),
        wanted: parsed.count,
        ready: best_ready,
        found,
    })
}

/// `count` of `ready` (which has at least that many), one NUMA node first.
fn pick(ready: Vec<&PciDevice>, count: usize) -> Vec<String> {
    // Node -> addresses; devices with no known node form a node of their own (None).
    let mut nodes: BTreeMap<Option<u32>, Vec<String>> = BTreeMap::new();
    for d in ready {
        nodes
            .entry(d.numa_node)
            .or_default()
            .push(d.address.clone());
    }
    let mut order: Vec<Vec<String>> = nodes.into_values().collect();
    for addrs in &mut order {
        addrs.sort();
    }
    order.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a[0].cmp(&b[0])));
    let mut out: Vec<String> = order.into_iter().flatten().take(count).collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::FakeHost;
    use super::*;

    #[test]
    fn specs_parse() {
        let h200 = PciId::parse("10de:2335").unwrap();
        assert_eq!(
            parse_spec("10de:2335x4").unwrap(),
            GpuSpec {
                ids: vec![h200],
                count: 4
            }
        );
        assert_eq!(
            parse_spec("H200X8").unwrap(),
            GpuSpec {
                ids: vec![h200],
                count: 8
            }
        );
        assert_eq!(parse_spec("h200").unwrap().count, 1);
        assert_eq!(
            parse_spec("1b36:0010x1").unwrap().ids,
            vec![PciId::parse("1b36:0010").unwrap()]
        );
        assert_eq!(
            parse_spec("h100sxmx2").unwrap(),
            GpuSpec {
                ids: vec![PciId::parse("10de:2330").unwrap()],
                count: 2
            }
        );
        assert_eq!(parse_spec("h100sxm").unwrap().count, 1);
        assert_eq!(parse_spec("a100x2").unwrap().ids.len(), 4);
        assert!(parse_spec("h200x0").is_err());
        assert!(parse_spec("10de:2335x").is_err());
        let e = parse_spec("b300x8").unwrap_err().to_string();
        assert!(
            e.contains("unknown name \"b300\"") && e.contains("h200"),
            "{e}"
        );
        assert!(parse_spec("10de:xyzx2").is_err());
    }

    /// `n` H200s per node, on vfio-pci, each alone in its group, plus extra devices.
    fn gpus(h: &FakeHost, placement: &[(&str, u32)]) {
        for (i, (addr, node)) in placement.iter().enumerate() {
            h.pci(addr, "10de:2335", 0x030200)
                .driver("vfio-pci")
                .group(100 + i as u32)
                .numa(*node);
        }
    }

    #[test]
    fn prefers_one_numa_node() {
        let h = FakeHost::new();
        // Node 0: three ready; node 1: four ready (one with a lower address than node 0's).
        gpus(
            &h,
            &[
                ("0000:18:00.0", 0),
                ("0000:2a:00.0", 0),
                ("0000:3a:00.0", 0),
                ("0000:0a:00.0", 1),
                ("0000:9a:00.0", 1),
                ("0000:ab:00.0", 1),
                ("0000:ba:00.0", 1),
            ],
        );
        let root = h.root();
        // Four fit only on node 1, which has the most.
        assert_eq!(
            select_devices(&root, "h200x4").unwrap(),
            vec![
                "0000:0a:00.0",
                "0000:9a:00.0",
                "0000:ab:00.0",
                "0000:ba:00.0"
            ]
        );
        // Two: still the node with the most ready devices, lowest addresses.
        assert_eq!(
            select_devices(&root, "10de:2335x2").unwrap(),
            vec!["0000:0a:00.0", "0000:9a:00.0"]
        );
        // Six: node 1 whole, then node 0 from its lowest address.
        assert_eq!(
            select_devices(&root, "h200x6").unwrap(),
            vec![
                "0000:0a:00.0",
                "0000:18:00.0",
                "0000:2a:00.0",
                "0000:9a:00.0",
                "0000:ab:00.0",
                "0000:ba:00.0"
            ]
        );
    }

    #[test]
    fn ties_go_to_the_node_with_the_lowest_address_and_unready_devices_are_skipped() {
        let h = FakeHost::new();
        gpus(
            &h,
            &[
                ("0000:40:00.0", 1),
                ("0000:41:00.0", 1),
                ("0000:30:00.0", 0),
                ("0000:31:00.0", 0),
            ],
        );
        // Node 0 has a third H200 on nouveau: not ready, so the nodes tie at two.
        h.pci("0000:20:00.0", "10de:2335", 0x030200)
            .driver("nouveau")
            .group(200)
            .numa(0);
        let root = h.root();
        assert_eq!(
            select_devices(&root, "h200x2").unwrap(),
            vec!["0000:30:00.0", "0000:31:00.0"]
        );
    }

    #[test]
    fn not_enough_lists_every_device_and_why() {
        let h = FakeHost::new();
        gpus(&h, &[("0000:18:00.0", 0)]);
        h.pci("0000:20:00.0", "10de:2335", 0x030200)
            .driver("nouveau")
            .group(200)
            .numa(0);
        h.pci("0000:30:00.0", "10de:2335", 0x030200)
            .driver("vfio-pci")
            .group(300)
            .numa(1);
        h.pci("0000:30:00.1", "10de:22a3", 0x040300)
            .driver("snd_hda_intel")
            .group(300);
        let err = select_devices(&h.root(), "h200x4").unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                HostError::NotEnoughReady {
                    wanted: 4,
                    ready: 1,
                    ..
                }
            ),
            "{msg}"
        );
        assert!(
            msg.contains("0000:18:00.0: 10de:2335 ready (NUMA node 0)"),
            "{msg}"
        );
        assert!(
            msg.contains("0000:20:00.0: 10de:2335 not ready: it is bound to nouveau, not vfio-pci"),
            "{msg}"
        );
        assert!(msg.contains("0000:30:00.0: 10de:2335 not ready: IOMMU group 300 also holds 0000:30:00.1, bound to snd_hda_intel"), "{msg}");
        let none = select_devices(&h.root(), "a100x1").unwrap_err().to_string();
        assert!(none.contains("0 ready: none found"), "{none}");
    }

    #[test]
    fn devices_named_with_device_are_not_picked_again() {
        let h = FakeHost::new();
        gpus(
            &h,
            &[
                ("0000:18:00.0", 0),
                ("0000:2a:00.0", 0),
                ("0000:3a:00.0", 0),
            ],
        );
        let root = h.root();
        let taken = vec![
            "18:00.0".to_string(),
            "/sys/bus/pci/devices/0000:3a:00.0".to_string(),
            "not-an-address".to_string(),
        ];
        assert_eq!(
            select_devices_besides(&root, "h200x1", &taken).unwrap(),
            vec!["0000:2a:00.0"]
        );
        let err = select_devices_besides(&root, "h200x2", &taken).unwrap_err();
        assert!(
            matches!(err, HostError::NotEnoughReady { ready: 1, .. }),
            "{err}"
        );
        assert_eq!(select_devices(&root, "h200x3").unwrap().len(), 3);
    }

    #[test]
    fn families_do_not_mix_ids() {
        let h = FakeHost::new();
        // One H100 SXM5 and two H100 PCIe, all ready.
        h.pci("0000:10:00.0", "10de:2330", 0x030200)
            .driver("vfio-pci")
            .group(1)
            .numa(0);
        h.pci("0000:20:00.0", "10de:2331", 0x030200)
            .driver("vfio-pci")
            .group(2)
            .numa(0);
        h.pci("0000:21:00.0", "10de:2331", 0x030200)
            .driver("vfio-pci")
            .group(3)
            .numa(0);
        let root = h.root();
        assert_eq!(
            select_devices(&root, "h100x1").unwrap(),
            vec!["0000:10:00.0"]
        );
        assert_eq!(
            select_devices(&root, "h100x2").unwrap(),
            vec!["0000:20:00.0", "0000:21:00.0"]
        );
        let err = select_devices(&root, "h100x3").unwrap_err();
        assert!(
            matches!(err, HostError::NotEnoughReady { ready: 2, .. }),
            "{err}"
        );
    }
}
