//! `appliance.yaml`: addresses, DHCP mode, pool and options.

use super::*;
use crate::boot_file::BootFile;

pub(super) fn validate_settings(input: &Input, errs: &mut Errors) -> Option<Settings> {
    let Some(src) = &input.settings else {
        errs.push(ConfigError {
            file: input.dir.join(crate::config::SETTINGS_FILE),
            line: 1,
            col: 1,
            field: String::new(),
            message: "missing: the appliance settings file is required".into(),
        });
        return None;
    };
    let doc = src.doc();
    let wire: SettingsFile = doc.parse(errs)?;
    let before = errs.len();
    let ip = |field: &str, s: &str, errs: &mut Errors| match parse_ipv4(s) {
        Ok(ip) => Some(ip),
        Err(e) => {
            errs.at(&doc, field, e);
            None
        }
    };
    let address = ip("server.address", &wire.server.address, errs);
    let http_port = wire.server.http_port.unwrap_or(80);
    let http_base = match (&wire.server.http_base, address) {
        (Some(b), _) if b.starts_with("http://") || b.starts_with("https://") => b.trim_end_matches('/').to_string(),
        (Some(b), _) => {
            errs.at(&doc, "server.http_base", format!("{b:?} is not an http:// or https:// URL"));
            String::new()
        }
        (None, Some(a)) if http_port == 80 => format!("http://{a}"),
        (None, Some(a)) => format!("http://{a}:{http_port}"),
        (None, None) => String::new(),
    };
    let d = &wire.dhcp;
    let mode = d.mode.unwrap_or_default();
    let subnet = d.subnet.as_deref().and_then(|s| match parse_subnet(s) {
        Ok(n) => Some(n),
        Err(e) => {
            errs.at(&doc, "dhcp.subnet", e);
            None
        }
    });
    let pool = d.pool.as_ref().and_then(|p| {
        let start = ip("dhcp.pool.start", &p.start, errs)?;
        let end = ip("dhcp.pool.end", &p.end, errs)?;
        if u32::from(start) > u32::from(end) {
            errs.at(&doc, "dhcp.pool", format!("pool start {start} is after its end {end}"));
        }
        if let Some(net) = subnet {
            for (f, a) in [("dhcp.pool.start", start), ("dhcp.pool.end", end)] {
                if !net.contains(a) {
                    errs.at(&doc, f, format!("{a} is outside the subnet {}/{}", net.network, net.prefix));
                }
            }
        }
        Some((start, end))
    });
    let router = d.router.as_deref().and_then(|r| ip("dhcp.router", r, errs));
    if let (Some(r), Some(net)) = (router, subnet) {
        if !net.contains(r) {
            errs.at(&doc, "dhcp.router", format!("router {r} is outside the subnet {}/{}", net.network, net.prefix));
        }
    }
    let dns = d.dns.iter().enumerate().filter_map(|(i, s)| ip(&index("dhcp.dns", i), s, errs)).collect();
    if mode == DhcpMode::Server {
        if subnet.is_none() && d.subnet.is_none() {
            errs.at(&doc, "dhcp", "server mode needs dhcp.subnet");
        }
        if pool.is_none() && d.pool.is_none() {
            errs.at(&doc, "dhcp", "server mode needs dhcp.pool");
        }
    }
    let ipxe_efi = match wire.ipxe.efi_binary.as_deref() {
        None => BootFile::IpxeEfi,
        Some(name) => BootFile::from_file_name(name).filter(|b| BootFile::IPXE_EFI.contains(b)).unwrap_or_else(|| {
            let choices: Vec<&str> = BootFile::IPXE_EFI.iter().map(|b| b.file_name()).collect();
            errs.at(&doc, "ipxe.efi_binary", format!("{name:?} is not one of {}", choices.join(", ")));
            BootFile::IpxeEfi
        }),
    };
    if errs.len() > before {
        return None;
    }
    Some(Settings {
        address: address?,
        http_port,
        http_base,
        interface: wire.server.interface.clone(),
        dhcp: DhcpSettings {
            mode,
            subnet,
            pool,
            lease_secs: d.lease_time.unwrap_or(3600),
            router,
            dns,
            domain: d.domain.clone(),
        },
        ipxe_efi,
        uefi_chain: wire.uefi_chain.unwrap_or_default(),
        gc_grace_secs: wire.artifacts.gc_grace_minutes.unwrap_or(30) * 60,
    })
}
