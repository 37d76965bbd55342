//! What an operator's templates see: a profile's kernel command line and its answer files
//! are rendered with the same context.
//!
//! | name | what |
//! |---|---|
//! | `machine.hostname`, `machine.mac`, `machine.vars.*`, `machine.known` | the machine |
//! | `machine.token` | its token for `POST /events/<mac>` (see `token`) |
//! | `machine.domain` | the DNS domain the appliance's DHCP hands out (`dhcp.domain`), when set |
//! | `profile.name`, `profile.description`, `profile.vars.*` | the profile |
//! | `arch`, `version` | the architecture and the artifact set's version |
//! | `server.address`, `server.http_base` | how clients reach the appliance |
//! | `answers.<name>` | the full URL of each of the profile's answer files for this machine |
//! | `artifacts.image.url`, `.sha256`, `.name` | the set's disk image, when it has one |
//!
//! An answer file requested over HTTP may not know its architecture (the request names only
//! the MAC): then `arch`, `version` and `artifacts` are undefined, and a template using them
//! fails rather than guess, unless the profile is built for one architecture only.

use super::ServerInfo;
use crate::arch::Arch;
use crate::catalog::{ArtifactSet, Profile};
use crate::decide::Identity;
use minijinja::{context, Value};
use std::collections::BTreeMap;

/// The profile's answer files are the ones of the machine's own target (`direct`), or of a
/// profile it may pick from a menu, whose URLs then name it (`?profile=`).
pub fn answer_url(
    server: &ServerInfo,
    machine: &Identity,
    profile: &Profile,
    name: &str,
    direct: bool,
) -> Option<String> {
    let mac = machine.mac?;
    let query = if direct { String::new() } else { format!("?profile={}", profile.name) };
    Some(format!("{}/answers/{}/{name}{query}", server.http_base, mac.dashed()))
}

/// The context of a profile's templates for `machine`. `set` is the artifact set of the
/// architecture, when it is known.
pub fn template_context(
    profile: &Profile,
    set: Option<(Arch, &ArtifactSet)>,
    machine: &Identity,
    server: &ServerInfo,
    direct: bool,
) -> Value {
    let token = machine.mac.map(|m| server.tokens.token(m));
    let machine_value = match token {
        Some(token) => context! { token => token, ..Value::from_serialize(machine) },
        None => Value::from_serialize(machine),
    };
    let answers: BTreeMap<&str, String> = profile
        .answers
        .keys()
        .filter_map(|name| Some((name.as_str(), answer_url(server, machine, profile, name, direct)?)))
        .collect();
    let common = context! {
        machine => machine_value,
        profile => context! { name => profile.name, description => profile.description, vars => Value::from_serialize(&profile.vars) },
        server => context! { address => server.address.to_string(), http_base => server.http_base },
        answers => answers,
    };
    let Some((arch, set)) = set else { return common };
    let mut artifacts = BTreeMap::new();
    if let Some(image) = &set.image {
        let path = format!("artifacts/{}/{}/{}", profile.name, set.version, image.name);
        artifacts.insert(
            "image",
            context! {
                name => image.name,
                url => format!("{}/{path}", server.http_base),
                sha256 => hex::encode(image.digest),
            },
        );
    }
    context! { arch => arch.as_str(), version => set.version, artifacts => artifacts, ..common }
}
