//! The fuzz targets' seed inputs, written from what real clients send: the DHCP requests of
//! every firmware in docs/firmware.md (the core's fixtures), the TFTP requests and replies of
//! those clients, HTTP requests as iPXE and UEFI HTTP Boot send them, and the config
//! directories of the repository (profiles/ and the core's test config) cut the way the config
//! target reads them. libFuzzer grows its own corpus from these (`target/fuzz/corpus`).

use anyhow::{Context, Result};
use appliance_core::dhcp::fixtures::firmware as fw;
use appliance_core::dhcp::fixtures::{mac, Req, DISCOVER, INFORM, REQUEST, SERVER};
use appliance_core::tftp::packet::{self, Mode, Packet, Request};
use std::path::Path;

/// Writes the seeds of `target` into `dir` (replacing what was there).
pub fn write(target: &str, dir: &Path, root: &Path) -> Result<usize> {
    let seeds = match target {
        "dhcp" => dhcp(),
        "tftp" => tftp(),
        "http" => http(),
        "config" => config(root)?,
        other => anyhow::bail!("no seeds for fuzz target {other:?}"),
    };
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:03}")), seed)?;
    }
    Ok(seeds.len())
}

/// One firmware's DHCP options for a MAC address (the core's fixtures).
type FirmwareOptions = fn([u8; 6]) -> Vec<(u8, Vec<u8>)>;

fn dhcp() -> Vec<Vec<u8>> {
    let firmware: [FirmwareOptions; 10] = [
        fw::seabios_ipxe_rom,
        fw::undionly_chained,
        fw::bios_stock_pxe,
        fw::ovmf_pxe,
        fw::ipxe_efi,
        fw::uboot,
        fw::uboot_efi_retry,
        fw::armvirt_edk2,
        fw::uefi_http,
        fw::os_client,
    ];
    let mut out = Vec::new();
    for (i, options) in firmware.iter().enumerate() {
        let m = mac(i as u8 + 1);
        out.push(Req::new(DISCOVER, m, options(m)).bytes());
        out.push(Req::new(REQUEST, m, options(m)).requested([10, 0, 0, 100].into()).server_id(SERVER).bytes());
        out.push(Req::new(INFORM, m, options(m)).ciaddr([10, 0, 0, 150].into()).bytes());
    }
    out
}

fn rrq(name: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    let options = options.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    Packet::Rrq(Request { filename: name.into(), mode: Mode::Octet, options }).encode(&mut out);
    out
}

fn tftp() -> Vec<Vec<u8>> {
    let mut ack = Vec::new();
    packet::encode_ack(&mut ack, 1);
    let mut probe = Vec::new();
    packet::encode_error(&mut probe, 8, "User aborted the transfer");
    vec![
        // EDK2's size probe, then its download; U-Boot with windows; GRUB; iPXE; pxelinux paths.
        rrq("grubnetx64.efi", &[("tsize", "0")]),
        rrq("grubnetx64.efi", &[("blksize", "1468")]),
        rrq("boot.scr.uimg", &[("timeout", "5"), ("blksize", "1468"), ("windowsize", "8"), ("tsize", "0")]),
        rrq("pxelinux.cfg/01-52-54-00-77-00-05", &[("timeout", "5"), ("blksize", "1468")]),
        rrq("/grub/grub.cfg-01-52-54-00-77-00-06", &[("blksize", "1024"), ("tsize", "0")]),
        rrq("undionly.kpxe", &[("tsize", "0"), ("blksize", "1432")]),
        rrq("artifacts/tiny-live/117f9d515cc3/vmlinuz", &[("windowsize", "64"), ("blksize", "65464")]),
        b"\x00\x01pxelinux.cfg/default-arm64\x00netascii\x00".to_vec(),
        b"\x00\x02upload\x00octet\x00".to_vec(),
        [vec![0, 0], ack.clone(), vec![0xff], ack, vec![0xff, 0xff], probe].concat(),
    ]
}

fn http() -> Vec<Vec<u8>> {
    [
        "GET /boot.ipxe HTTP/1.1\r\nConnection: keep-alive\r\nUser-Agent: iPXE/1.21.1+\r\nHost: 10.77.0.1\r\n\r\n",
        "GET /ipxe/script?mac=52-54-00-77-00-01&buildarch=x86_64&platform=efi HTTP/1.1\r\nHost: 10.77.0.1\r\n\r\n",
        "GET /artifacts/tiny-live/593751617602/initrd.img HTTP/1.1\r\nHost: 10.77.0.1\r\nRange: bytes=0-1048575\r\n\r\n",
        "HEAD /artifacts/tiny-live/593751617602/vmlinuz HTTP/1.1\r\nHost: 10.77.0.1\r\nIf-None-Match: \"x\"\r\n\r\n",
        "GET /ipxe.efi HTTP/1.1\r\nHost: 10.77.0.1\r\nAccept: */*\r\nUser-Agent: UefiHttpBoot/1.0\r\n\r\n",
        // shim on UEFI HTTP Boot asks for its GRUB with an empty first segment.
        "GET //grubx64.efi HTTP/1.1\r\nHost: 10.77.0.1\r\n\r\n",
        "GET /artifacts/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.0\r\n\r\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// A config directory as the config target reads it: appliance.yaml, machines.yaml,
/// menus.yaml and one profile, joined by NUL bytes; each directory's settings with every
/// profile of both, and once with the MAC database again as the on-site overlay.
fn config(root: &Path) -> Result<Vec<Vec<u8>>> {
    let dirs = ["profiles", "core/tests/data/config"].map(|d| root.join(d));
    let read = |path: &Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let mut profiles = Vec::new();
    for dir in &dirs {
        let mut found: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .filter(|p| {
                !matches!(
                    p.file_name().and_then(|n| n.to_str()),
                    Some("appliance.yaml" | "machines.yaml" | "menus.yaml")
                )
            })
            .collect();
        found.sort();
        profiles.extend(found);
    }
    let mut out = Vec::new();
    for dir in &dirs {
        let fixed =
            [read(&dir.join("appliance.yaml"))?, read(&dir.join("machines.yaml"))?, read(&dir.join("menus.yaml"))?];
        for profile in &profiles {
            out.push([fixed[0].clone(), fixed[1].clone(), fixed[2].clone(), read(profile)?].join(&0u8));
        }
        let with_overlay = [&fixed[..], &[read(&profiles[0])?, fixed[1].clone()]].concat();
        out.push(with_overlay.join(&0u8));
    }
    Ok(out)
}
