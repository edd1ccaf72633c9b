//! Whether the host itself uses a PCI device: a disk behind it holds a mounted filesystem or
//! active swap, a network interface behind it carries a default route, or it is the virtio
//! transport of a mounted shared filesystem (virtio-9p, virtiofs; e.g. a VM's root).
//!
//! Block and network devices are matched to the PCI device by where their sysfs nodes live:
//! `/sys/class/block/X` and `/sys/class/net/X` resolve to paths below the PCI device's
//! directory. Mounts are matched by device number (`/proc/self/mountinfo`), which also
//! covers `/dev/root`; device-mapper and md devices stacked on a disk are followed through
//! `holders/`. Shared filesystems have no block device: they are matched by mount tag, the
//! source of a `9p` (virtio transport) or `virtiofs` mount, against the `mount_tag` of the
//! virtio devices below the PCI device (9p) or `/sys/fs/virtiofs/*/tag` (virtiofs).

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use super::sysfs::{link_name, list_dir, read_opt, HostRoot};
use super::HostError;

/// How the host uses the device at `address`, one sentence per use; empty when unused.
pub fn host_use(root: &HostRoot, address: &str) -> Result<Vec<String>, HostError> {
    let Ok(dev_dir) = fs::canonicalize(root.pci_device(address)) else {
        return Ok(Vec::new());
    };
    let mut uses = block_uses(root, &dev_dir)?;
    uses.extend(net_uses(root, &dev_dir)?);
    uses.extend(shared_fs_uses(root, &dev_dir)?);
    Ok(uses)
}

/// Mounted virtio-9p and virtiofs filesystems whose virtio device lives below `dev_dir`.
fn shared_fs_uses(root: &HostRoot, dev_dir: &Path) -> Result<Vec<String>, HostError> {
    // (filesystem type, mount tag) -> virtio device, for the devices below `dev_dir`.
    let mut tags: HashMap<(&str, String), String> = HashMap::new();
    let virtio = root.path("/sys/bus/virtio/devices");
    for name in list_dir(&virtio)? {
        let Ok(target) = fs::canonicalize(virtio.join(&name)) else {
            continue;
        };
        if target.starts_with(dev_dir) {
            if let Some(tag) = read_opt(&target.join("mount_tag"))? {
                // The attribute may carry a trailing NUL.
                let tag = tag.trim_end_matches('\0').to_string();
                tags.insert(("9p", tag), name);
            }
        }
    }
    let vfs = root.path("/sys/fs/virtiofs");
    for n in list_dir(&vfs)? {
        let Ok(target) = fs::canonicalize(vfs.join(&n).join("device")) else {
            continue;
        };
        if target.starts_with(dev_dir) {
            if let Some(tag) = read_opt(&vfs.join(&n).join("tag"))? {
                let name = target
                    .file_name()
                    .map_or(n.clone(), |f| f.to_string_lossy().into_owned());
                tags.insert(("virtiofs", tag), name);
            }
        }
    }
    if tags.is_empty() {
        return Ok(Vec::new());
    }
    let mut uses = BTreeSet::new();
    for line in read_opt(&root.path("/proc/self/mountinfo"))?
        .unwrap_or_default()
        .lines()
    {
        // `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - FSTYPE SOURCE SUPEROPTIONS`
        let Some((head, tail)) = line.split_once(" - ") else {
            continue;
        };
        let tail: Vec<&str> = tail.split_whitespace().collect();
        let (Some(mnt), [fstype, source, rest @ ..]) =
            (head.split_whitespace().nth(4), tail.as_slice())
        else {
            continue;
        };
        // The kernel shows `trans=` only for a transport other than its default, which is
        // virtio whenever a virtio 9p device exists.
        let trans = rest
            .first()
            .and_then(|o| o.split(',').find_map(|o| o.strip_prefix("trans=")));
        let fstype = match *fstype {
            "9p" if trans.is_none_or(|t| t == "virtio") => "9p",
            "virtiofs" => "virtiofs",
            _ => continue,
        };
        if let Some(dev) = tags.get(&(fstype, source.to_string())) {
            uses.insert(format!(
                "{dev} ({fstype} mount tag {source}) is mounted on {mnt}"
            ));
        }
    }
    Ok(uses.into_iter().collect())
}

/// Class entries (`/sys/class/CLASS/*`) whose node lives below `dev_dir`.
fn class_members_below(
    root: &HostRoot,
    class: &str,
    dev_dir: &Path,
) -> Result<Vec<String>, HostError> {
    let dir = root.path(class);
    let mut found = Vec::new();
    for name in list_dir(&dir)? {
        if let Ok(target) = fs::canonicalize(dir.join(&name)) {
            if target.starts_with(dev_dir) {
                found.push(name);
            }
        }
    }
    Ok(found)
}

fn block_uses(root: &HostRoot, dev_dir: &Path) -> Result<Vec<String>, HostError> {
    let class = root.path("/sys/class/block");
    let direct = class_members_below(root, "/sys/class/block", dev_dir)?;
    // The disks and partitions, plus whatever is stacked on them (dm-*, md*), with the disk
    // each one comes from, for the message.
    let mut origin: HashMap<String, String> = HashMap::new();
    let mut todo: Vec<(String, String)> = direct.iter().map(|n| (n.clone(), n.clone())).collect();
    while let Some((name, from)) = todo.pop() {
        if origin.contains_key(&name) {
            continue;
        }
        for holder in list_dir(&class.join(&name).join("holders"))? {
            todo.push((holder, from.clone()));
        }
        origin.insert(name, from);
    }
    let mut by_devnum: HashMap<String, String> = HashMap::new();
    let mut by_devname: HashMap<String, String> = HashMap::new();
    for name in origin.keys() {
        if let Some(devnum) = read_opt(&class.join(name).join("dev"))? {
            by_devnum.insert(devnum, name.clone());
        }
        by_devname.insert(name.clone(), name.clone());
        if let Some(dm) = read_opt(&class.join(name).join("dm/name"))? {
            by_devname.insert(dm, name.clone());
        }
    }
    let describe = |name: &str| match origin.get(name) {
        Some(from) if from != name => format!("{name} (on {from})"),
        _ => name.to_string(),
    };

    let mut uses = BTreeSet::new();
    let mountinfo = root.path("/proc/self/mountinfo");
    for line in read_opt(&mountinfo)?.unwrap_or_default().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let (Some(devnum), Some(mnt)) = (f.get(2), f.get(4)) {
            if let Some(name) = by_devnum.get(*devnum) {
                uses.insert(format!("{} is mounted on {mnt}", describe(name)));
            }
        }
    }
    for line in read_opt(&root.path("/proc/swaps"))?
        .unwrap_or_default()
        .lines()
        .skip(1)
    {
        let Some(dev) = line.split_whitespace().next() else {
            continue;
        };
        let base = Path::new(dev)
            .file_name()
            .map(|b| b.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(name) = by_devname.get(&base) {
            uses.insert(format!("{} is active swap", describe(name)));
        }
    }
    Ok(uses.into_iter().collect())
}

/// Interfaces that carry a default route (IPv4 or IPv6).
fn default_route_ifaces(root: &HostRoot) -> Result<BTreeSet<String>, HostError> {
    let mut ifaces = BTreeSet::new();
    for line in read_opt(&root.path("/proc/net/route"))?
        .unwrap_or_default()
        .lines()
        .skip(1)
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 8 && f[1] == "00000000" && f[7] == "00000000" {
            ifaces.insert(f[0].to_string());
        }
    }
    for line in read_opt(&root.path("/proc/net/ipv6_route"))?
        .unwrap_or_default()
        .lines()
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 10 && f[1] == "00" && f[0].chars().all(|c| c == '0') && f[9] != "lo" {
            ifaces.insert(f[9].to_string());
        }
    }
    Ok(ifaces)
}

fn net_uses(root: &HostRoot, dev_dir: &Path) -> Result<Vec<String>, HostError> {
    let defaults = default_route_ifaces(root)?;
    if defaults.is_empty() {
        return Ok(Vec::new());
    }
    let net = root.path("/sys/class/net");
    let mut uses = Vec::new();
    for iface in class_members_below(root, "/sys/class/net", dev_dir)? {
        // Follow bond/bridge masters: the default route may sit on the upper device.
        let mut chain: Vec<String> = vec![iface.clone()];
        while chain.len() < 8 {
            let last: PathBuf = net.join(&chain[chain.len() - 1]).join("master");
            match link_name(&last)? {
                Some(m) if !chain.contains(&m) => chain.push(m),
                _ => break,
            }
        }
        if let Some(d) = chain.iter().find(|c| defaults.contains(*c)) {
            if *d == iface {
                uses.push(format!("{iface} carries the default route"));
            } else {
                uses.push(format!(
                    "{iface} is a port of {d}, which carries the default route"
                ));
            }
        }
    }
    Ok(uses)
}
