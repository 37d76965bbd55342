//! `machines.yaml` and the on-site overlay: machines by MAC, vendor rules by OUI, and the
//! policy for unknown machines.

use super::*;

/// Resolves `profile`/`menu`/`action` into a target, checking what it names exists.
#[allow(clippy::too_many_arguments)]
fn target(
    profile: Option<&String>,
    menu: Option<&String>,
    action: Option<ActionWire>,
    field: &str,
    profiles: &BTreeMap<String, Arc<Profile>>,
    menus: &BTreeMap<String, Arc<Menu>>,
    doc: &Doc<'_>,
    errs: &mut Errors,
) -> Option<Option<Target>> {
    let t = match (action, profile, menu) {
        (None, None, None) => return Some(None),
        (None | Some(ActionWire::Profile), Some(p), None) => match profiles.get(p) {
            Some(profile) => Target::Profile(profile.clone()),
            None => {
                errs.at(doc, &key(field, "profile"), format!("no profile named {p:?}{}", known(profiles.keys())));
                return None;
            }
        },
        (None | Some(ActionWire::Menu), None, Some(m)) => match menus.get(m) {
            Some(menu) => Target::Menu(menu.clone()),
            None => {
                errs.at(doc, &key(field, "menu"), format!("no menu named {m:?}{}", known(menus.keys())));
                return None;
            }
        },
        // Without a name: the menu called `default`, or the only one.
        (Some(ActionWire::Menu), None, None) => match menus.get("default").or_else(|| menus.values().next()) {
            Some(menu) if menus.contains_key("default") || menus.len() == 1 => Target::Menu(menu.clone()),
            _ => {
                errs.at(doc, field, format!("`action: menu` needs `menu: NAME`{}", known(menus.keys())));
                return None;
            }
        },
        (Some(ActionWire::Local), None, None) => Target::Local,
        (Some(ActionWire::Ignore), None, None) => Target::Ignore,
        _ => {
            errs.at(doc, field, "give one of `profile: NAME`, `menu: NAME` or `action: local|ignore|menu`");
            return None;
        }
    };
    Some(Some(t))
}

/// The merged MAC database.
pub(super) struct MacDb {
    pub machines: BTreeMap<MacAddr, Machine>,
    pub vendors: Vec<VendorRule>,
    pub unknown: Target,
    pub unknown_policy: Policy,
}

pub(super) fn validate_macdb(
    input: &Input,
    profiles: &BTreeMap<String, Arc<Profile>>,
    menus: &BTreeMap<String, Arc<Menu>>,
    settings: Option<&Settings>,
    errs: &mut Errors,
) -> MacDb {
    let mut machines: BTreeMap<MacAddr, (Machine, String, usize)> = BTreeMap::new();
    let mut vendors = Vec::new();
    let mut unknown = Target::Ignore;
    let mut policy = Policy::default();
    let docs: Vec<&SourceFile> = input.machines.iter().chain(input.overlay.iter()).collect();
    for (file_no, src) in docs.iter().enumerate() {
        let doc = src.doc();
        let Some(db) = doc.parse_or_default::<MacDbFile>(errs) else {
            continue;
        };
        let mut in_this_file: HashMap<MacAddr, String> = HashMap::new();
        for (k, v) in &db.machines {
            let Some(kstr) = k.as_str() else {
                errs.at(&doc, "machines", format!("machine keys must be MAC strings, found {k:?}"));
                continue;
            };
            let base = key("machines", kstr);
            let mac = match MacAddr::parse(kstr) {
                Ok(m) => m,
                Err(e) => {
                    errs.at(&doc, &base, e);
                    continue;
                }
            };
            if let Some(prev) = in_this_file.insert(mac, kstr.to_string()) {
                let (line, _) = doc.position(&key("machines", &prev));
                errs.at(&doc, &base, format!("duplicate MAC {mac} (also at line {line} as {prev:?})"));
                continue;
            }
            let Some(w) = doc.parse_value::<MachineWire>(v, &base, errs) else {
                continue;
            };
            if let Some(m) = machine(mac, &w, &base, profiles, menus, &db, settings, &doc, errs) {
                // The overlay (a later file) wins entry by entry.
                machines.insert(mac, (m, src.path.display().to_string(), file_no));
            }
        }
        if file_no == 0 || !db.vendors.is_empty() {
            let mut file_vendors = Vec::new();
            for (i, v) in db.vendors.iter().enumerate() {
                let base = index("vendors", i);
                let Some(w) = doc.parse_value::<VendorWire>(v, &base, errs) else {
                    continue;
                };
                let oui = match Oui::parse(&w.oui) {
                    Ok(o) => o,
                    Err(e) => {
                        errs.at(&doc, &key(&base, "oui"), e);
                        continue;
                    }
                };
                let arch = match w.arch.as_deref().map(parse_arch) {
                    Some(Err(e)) => {
                        errs.at(&doc, &key(&base, "arch"), e);
                        continue;
                    }
                    Some(Ok(a)) => Some(a),
                    None => None,
                };
                let Some(t) = target(w.profile.as_ref(), w.menu.as_ref(), w.action, &base, profiles, menus, &doc, errs)
                else {
                    continue;
                };
                if let (Some(a), Some(Target::Profile(p))) = (arch, &t) {
                    if !p.arches.contains_key(&a) {
                        errs.at(&doc, &key(&base, "profile"), format!("profile {:?} has no {a} artifacts", p.name));
                    }
                }
                file_vendors.push(VendorRule {
                    oui,
                    arch,
                    target: t,
                    uefi_chain: w.uefi_chain,
                    comment: w.comment.clone(),
                    after_install: w.after_install,
                    origin: doc.origin(&base),
                });
            }
            // Overlay rules take precedence over shipped ones for the same OUI.
            vendors.retain(|r: &VendorRule| !file_vendors.iter().any(|n| n.oui == r.oui));
            file_vendors.extend(vendors);
            vendors = file_vendors;
        }
        if let Some(u) = &db.unknown {
            if let Some(t) =
                target(u.profile.as_ref(), u.menu.as_ref(), u.action, "unknown", profiles, menus, &doc, errs)
            {
                unknown = t.unwrap_or(Target::Ignore);
                policy = Policy {
                    uefi_chain: u.uefi_chain,
                    after_install: u.after_install,
                    origin: Some(doc.origin("unknown")),
                };
            }
        }
    }
    // Fixed addresses must be unique across the merged database.
    let mut by_addr: HashMap<Ipv4Addr, MacAddr> = HashMap::new();
    for (mac, (m, _, _)) in &machines {
        if let Some(a) = m.address {
            if let Some(other) = by_addr.insert(a, *mac) {
                let src = docs.get(machines[mac].2).copied();
                if let Some(src) = src {
                    let doc = src.doc();
                    errs.at(
                        &doc,
                        &key(&key("machines", &mac.to_string()), "address"),
                        format!("address {a} is also fixed for {other}"),
                    );
                }
            }
        }
    }
    MacDb {
        machines: machines.into_iter().map(|(k, (m, _, _))| (k, m)).collect(),
        vendors,
        unknown,
        unknown_policy: policy,
    }
}

#[allow(clippy::too_many_arguments)]
fn machine(
    mac: MacAddr,
    w: &MachineWire,
    base: &str,
    profiles: &BTreeMap<String, Arc<Profile>>,
    menus: &BTreeMap<String, Arc<Menu>>,
    db: &MacDbFile,
    settings: Option<&Settings>,
    doc: &Doc<'_>,
    errs: &mut Errors,
) -> Option<Machine> {
    let hostname = w.hostname.clone().unwrap_or_else(|| format!("node-{}", mac.hex()));
    if !valid_hostname(&hostname) {
        errs.at(doc, &key(base, "hostname"), format!("{hostname:?} is not a valid hostname"));
        return None;
    }
    let arch = match w.arch.as_deref().map(parse_arch) {
        Some(Err(e)) => {
            errs.at(doc, &key(base, "arch"), e);
            return None;
        }
        Some(Ok(a)) => Some(a),
        None => None,
    };
    let target = target(w.profile.as_ref(), w.menu.as_ref(), w.action, base, profiles, menus, doc, errs)?;
    // The machine's architecture as the database knows it (its own, else its vendor's rule).
    let known_arch = arch.or_else(|| {
        db.vendors.iter().find_map(|v| {
            let w: VendorWire = serde_yaml::from_value(v.clone()).ok()?;
            (Oui::parse(&w.oui).ok()? == mac.oui()).then(|| w.arch.as_deref().and_then(Arch::parse)).flatten()
        })
    });
    if let (Some(Target::Profile(p)), Some(a)) = (&target, known_arch) {
        if !p.arches.contains_key(&a) {
            let has: Vec<&str> = p.arches.keys().map(|a| a.as_str()).collect();
            errs.at(
                doc,
                &key(base, "profile"),
                format!("profile {:?} has no {a} artifacts (it has: {})", p.name, has.join(", ")),
            );
            return None;
        }
    }
    let address = match w.address.as_deref().map(parse_ipv4) {
        Some(Err(e)) => {
            errs.at(doc, &key(base, "address"), e);
            return None;
        }
        Some(Ok(a)) => Some(a),
        None => None,
    };
    if let (Some(a), Some(net)) = (address, settings.and_then(|s| s.dhcp.subnet)) {
        if !net.contains(a) {
            errs.at(doc, &key(base, "address"), format!("{a} is outside the subnet {}/{}", net.network, net.prefix));
            return None;
        }
    }
    let vars = serde_json::to_value(&w.vars).unwrap_or(serde_json::Value::Null);
    Some(Machine {
        mac,
        hostname,
        arch,
        target,
        address,
        chain_ipxe: w.chain_ipxe,
        uefi_chain: w.uefi_chain,
        vars,
        after_install: w.after_install,
        origin: doc.origin(base),
    })
}
