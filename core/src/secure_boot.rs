//! `appliance check`'s Secure Boot warnings: a machine on the shim chain (its entry, its vendor
//! rule, or the unknown-machine policy) that can reach a profile whose kernel carries no
//! Authenticode signature would be refused by shim when Secure Boot is on. A warning, not an
//! error: the operator may know the machine has Secure Boot off.
//!
//! Pure: whether each kernel is signed is a fact the daemon found out from the file's first
//! bytes (`pe::authenticode`) and hands in, keyed by the artifact's digest.

use crate::arch::Arch;
use crate::catalog::{Artifact, Catalog, Digest, MenuAction, Origin, Profile, Target};
use crate::decide::{uefi_chain, Rule};
use crate::pe::{Authenticode, PeError};
use crate::uefi_chain::UefiChain;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// What the daemon found about one kernel file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelFact {
    Pe(Authenticode),
    /// Its bytes are not a PE image we can read.
    NotPe(PeError),
    /// Its bytes could not be read (a blob not fetched yet, say), with why.
    Unreadable(String),
}

/// Kernel facts by the kernel artifact's digest.
pub type KernelFacts = BTreeMap<Digest, KernelFact>;

/// One warning, at the entry it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub origin: Origin,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

/// The kernels whose facts the warnings need: every kernel of every profile, for UEFI
/// architectures.
pub fn kernels(catalog: &Catalog) -> impl Iterator<Item = &Artifact> {
    catalog.profiles().flat_map(|p| p.arches.iter()).filter(|(a, _)| uefi(**a)).map(|(_, set)| &set.kernel)
}

/// The architectures a UEFI chain exists for.
fn uefi(arch: Arch) -> bool {
    matches!(arch, Arch::X86_64 | Arch::Arm64)
}

/// Every place a machine is put on the shim chain with a profile whose kernel is not signed,
/// in the order entries, vendor rules, unknown-machine policy; and once per kernel that could
/// not be checked.
pub fn unsigned_kernel_warnings(catalog: &Catalog, facts: &KernelFacts) -> Vec<Warning> {
    let mut out = Vec::new();
    let mut unchecked = BTreeSet::new();
    let global = catalog.settings().uefi_chain;
    let policy = catalog.unknown_policy();
    let mut reach = |origin: &Origin, chain: UefiChain, why: Rule, target: &Target, arch: Option<Arch>| {
        if chain != UefiChain::Shim {
            return;
        }
        for (profile, arch) in reachable(target, arch) {
            let kernel = &profile.arches[&arch].kernel;
            let problem = match facts.get(&kernel.digest) {
                Some(KernelFact::Pe(Authenticode::Signed { .. })) => continue,
                Some(KernelFact::Pe(Authenticode::Unsigned)) => {
                    "a kernel without an Authenticode signature".to_string()
                }
                Some(KernelFact::NotPe(e)) => format!("a kernel that is no EFI program ({e})"),
                Some(KernelFact::Unreadable(why)) => {
                    if unchecked.insert(kernel.digest) {
                        let message = format!("cannot tell whether this kernel is signed for Secure Boot: {why}");
                        out.push(Warning { origin: kernel.origin.clone(), message });
                    }
                    continue;
                }
                None => continue,
            };
            let message = format!(
                "uefi_chain shim (by {why}), but profile {} ({arch}) boots {problem} ({}): shim refuses it when \
                 Secure Boot is on",
                profile.name, kernel.origin
            );
            out.push(Warning { origin: origin.clone(), message });
        }
    };
    for m in catalog.machines() {
        let vendor = catalog.vendor_rule(m.mac);
        let target = m.target.as_ref().or(vendor.and_then(|v| v.target.as_ref())).unwrap_or(catalog.unknown());
        let choice = uefi_chain(catalog, Some(m.mac));
        reach(&m.origin, choice.chain, choice.rule, target, m.arch.or(vendor.and_then(|v| v.arch)));
    }
    for v in catalog.vendors() {
        // It speaks for machines without an entry: the policy's chain comes before the global one.
        let (chain, why) = match (v.uefi_chain, policy.uefi_chain) {
            (Some(c), _) => (c, Rule::Oui(v.oui)),
            (None, Some(c)) => (c, Rule::UnknownPolicy),
            (None, None) => (global, Rule::Global),
        };
        reach(&v.origin, chain, why, v.target.as_ref().unwrap_or(catalog.unknown()), v.arch);
    }
    if let Some(origin) = &policy.origin {
        let (chain, why) = policy.uefi_chain.map_or((global, Rule::Global), |c| (c, Rule::UnknownPolicy));
        reach(origin, chain, why, catalog.unknown(), None);
    }
    out
}

/// The (profile, architecture) pairs a target can boot on UEFI, for a machine of `arch` (any
/// UEFI architecture when unknown).
fn reachable(target: &Target, arch: Option<Arch>) -> Vec<(&Profile, Arch)> {
    let profiles: Vec<&Profile> = match target {
        Target::Profile(p) => vec![p],
        Target::Menu(m) => m
            .entries
            .iter()
            .filter_map(|e| match &e.action {
                MenuAction::Profile(p) => Some(&**p),
                _ => None,
            })
            .collect(),
        Target::Local | Target::Ignore => Vec::new(),
    };
    profiles
        .into_iter()
        .flat_map(|p| p.arches.keys().map(move |a| (p, *a)))
        .filter(|(_, a)| uefi(*a) && arch.is_none_or(|want| want == *a))
        .collect()
}
