//! `menus.yaml`: boot menus whose entries name profiles, local boot or the iPXE shell.

use super::*;

pub(super) fn validate_menus(
    input: &Input,
    profiles: &BTreeMap<String, Arc<Profile>>,
    errs: &mut Errors,
) -> BTreeMap<String, Arc<Menu>> {
    let mut out = BTreeMap::new();
    let Some(src) = &input.menus else { return out };
    let doc = src.doc();
    let Some(file) = doc.parse_or_default::<MenusFile>(errs) else {
        return out;
    };
    for (name, m) in &file.menus {
        let base = key("menus", name);
        if !valid_name(name) {
            errs.at(&doc, &base, format!("{name:?} is not a valid menu name"));
            continue;
        }
        let mut entries = Vec::new();
        for (i, e) in m.entries.iter().enumerate() {
            let f = index(&key(&base, "entries"), i);
            let entry = match (&e.profile, e.action) {
                (Some(p), None) => match profiles.get(p) {
                    Some(prof) => {
                        let label = e.label.clone().unwrap_or_else(|| {
                            if prof.description.is_empty() {
                                p.clone()
                            } else {
                                prof.description.clone()
                            }
                        });
                        MenuEntry { id: p.clone(), label, action: MenuAction::Profile(prof.clone()) }
                    }
                    None => {
                        errs.at(&doc, &key(&f, "profile"), format!("no profile named {p:?}{}", known(profiles.keys())));
                        continue;
                    }
                },
                (None, Some(MenuActionWire::Local)) => MenuEntry {
                    id: "local".into(),
                    label: e.label.clone().unwrap_or_else(|| "Boot from local disk".into()),
                    action: MenuAction::Local,
                },
                (None, Some(MenuActionWire::Shell)) => MenuEntry {
                    id: "shell".into(),
                    label: e.label.clone().unwrap_or_else(|| "iPXE shell".into()),
                    action: MenuAction::Shell,
                },
                _ => {
                    errs.at(&doc, &f, "an entry is either `profile: NAME` or `action: local|shell`");
                    continue;
                }
            };
            if entries.iter().any(|x: &MenuEntry| x.id == entry.id) {
                errs.at(&doc, &f, format!("entry {:?} appears twice", entry.id));
                continue;
            }
            entries.push(entry);
        }
        if m.entries.is_empty() {
            errs.at(&doc, &key(&base, "entries"), "a menu needs at least one entry");
            continue;
        }
        let default = match &m.default {
            Some(d) if entries.iter().any(|e| &e.id == d) => d.clone(),
            Some(d) => {
                errs.at(&doc, &key(&base, "default"), format!("default {d:?} is not one of this menu's entries"));
                continue;
            }
            None => match entries.first() {
                Some(e) => e.id.clone(),
                None => continue,
            },
        };
        out.insert(
            name.clone(),
            Arc::new(Menu {
                name: name.clone(),
                title: m.title.clone().unwrap_or_else(|| "Network boot".into()),
                timeout_secs: m.timeout,
                default,
                entries,
            }),
        );
    }
    out
}
