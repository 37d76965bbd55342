//! The TFTP router: turns a requested path into bytes, by asking the core. Rendered configs for
//! every path U-Boot and GRUB try (docs/firmware.md#u-boot-pxelinux-lookup,
//! docs/firmware.md#grub-config-lookup), the U-Boot script image, bootloader binaries,
//! versioned artifacts, and a read-only fallback file root.
//!
//! No policy here: what a machine gets is `decide`'s; this file only gathers the client's facts
//! (path, source address → MAC, what it said in DHCP) and fetches the bytes.

use super::files;
use super::neighbours;
use crate::artifacts::{self, Touches};
use crate::state::Shared;
use crate::tftp::{Content, Handler, ReadRequest, TftpError, TransferReport};
use appliance_core::arch::Firmware;
use appliance_core::boot_file::BootFile;
use appliance_core::catalog::DhcpMode;
use appliance_core::client::{classify_tftp, Client, Learned, PathFacts, TftpRequest};
use appliance_core::decide::{decide, decide_boot_file, Decision, Outcome, Stage};
use appliance_core::render::{self, Format};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tracing::info;

pub struct TftpRoutes {
    pub shared: Arc<Shared>,
    pub store: PathBuf,
    pub bootloaders: Option<PathBuf>,
    /// Read-only fallback root for any other file.
    pub root: Option<PathBuf>,
    pub touches: Arc<Touches>,
    /// `--dhcp` override; else the catalog's mode.
    pub mode: Option<DhcpMode>,
    /// GRUB images with our address written in, so a boot storm does not re-read and re-patch
    /// them per request.
    pub grub_images: GrubImages,
}

/// Patched GRUB images by file name, valid while the file's size and mtime and our address stay.
#[derive(Default)]
pub struct GrubImages(std::sync::Mutex<std::collections::HashMap<String, GrubImage>>);

struct GrubImage {
    stamp: (u64, Option<SystemTime>),
    address: Ipv4Addr,
    bytes: bytes::Bytes,
}

impl GrubImages {
    fn get(&self, path: &std::path::Path, name: &str, address: Ipv4Addr) -> std::io::Result<bytes::Bytes> {
        let meta = std::fs::metadata(path)?;
        let stamp = (meta.len(), meta.modified().ok());
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(img) = cache.get(name).filter(|i| i.stamp == stamp && i.address == address) {
            return Ok(img.bytes.clone());
        }
        let raw = std::fs::read(path)?;
        let bytes: bytes::Bytes = render::grub_image::patch(&raw, address).unwrap_or(raw).into();
        cache.insert(name.to_string(), GrubImage { stamp, address, bytes: bytes.clone() });
        Ok(bytes)
    }
}

fn peer_v4(req: &ReadRequest) -> Option<Ipv4Addr> {
    match req.peer.ip() {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
}

impl TftpRoutes {
    /// Everything we know about the client behind this request.
    fn client(&self, req: &ReadRequest, facts: &PathFacts, firmware: Firmware, now: Instant) -> Client {
        let mut client = Client::new(firmware);
        let peer = peer_v4(req);
        let learned_mac = facts
            .mac
            .map(|m| (m, Learned::TftpPath(req.path.clone())))
            .or_else(|| facts.ip.and_then(|ip| self.mac_for(ip)).map(|m| (m, Learned::TftpPath(req.path.clone()))))
            .or_else(|| peer.and_then(|ip| self.mac_for(ip).map(|m| (m, Learned::SourceAddress(ip)))));
        client = client.learn_from_path(&req.path, facts, learned_mac);
        client.ip = peer;
        if let Some(dhcp) = client.mac.and_then(|m| self.shared.recalled_dhcp(m, now)) {
            client.merge_overheard(&dhcp);
            // A config request comes from U-Boot or GRUB, whatever the firmware said in DHCP;
            // a boot file request (`Unknown` here) is the firmware itself.
            if firmware != Firmware::Unknown {
                client.firmware = firmware;
            }
        }
        if let Some(mac) = client.mac {
            client.ipxe_chained = self.shared.chained(mac, now);
        }
        client
    }

    fn mac_for(&self, ip: Ipv4Addr) -> Option<appliance_core::mac::MacAddr> {
        self.shared.mac_for_ip(ip).or_else(|| neighbours::lookup(ip))
    }

    fn rendered(
        &self,
        req: &ReadRequest,
        facts: &PathFacts,
        stage: Stage,
        format: Format,
    ) -> Result<Content, TftpError> {
        if facts.ip_prefix {
            // A shortened hex address never names one machine.
            return Err(TftpError::not_found());
        }
        let now = Instant::now();
        let firmware = if format == Format::Grub { Firmware::Grub } else { Firmware::Uboot };
        let client = self.client(req, facts, firmware, now);
        let catalog = self.shared.catalog();
        let decision = decide(&catalog, &client, stage);
        let text = render::render(&catalog, &decision, &self.shared.server(), format)
            .map_err(|e| TftpError::undefined(format!("render failed: {e}")))?;
        log(req, &decision, if text.is_some() { "rendered" } else { "not found" });
        match text {
            Some(t) => Ok(Content::Bytes(t.into_bytes().into())),
            None => Err(TftpError::not_found()),
        }
    }

    fn mode(&self) -> DhcpMode {
        self.mode.unwrap_or(self.shared.catalog().settings().dhcp.mode)
    }

    /// A request for one of our boot program names. With `--dhcp off` the site's DHCP gives
    /// every machine the same name, so the name says nothing: decide from what the machine said
    /// in its (overheard) DHCP request and serve the right bytes under that name.
    fn boot_file(&self, req: &ReadRequest, named: BootFile) -> Result<Content, TftpError> {
        if self.mode() != DhcpMode::Off {
            return self.bootloader(named);
        }
        let now = Instant::now();
        let client = self.client(req, &PathFacts::default(), Firmware::Unknown, now);
        let catalog = self.shared.catalog();
        let decision = decide_boot_file(&catalog, &client, named);
        log(req, &decision, "boot file");
        match &decision.outcome {
            Outcome::BootFile { file, .. } => {
                if let (true, Some(mac)) = (file.is_ipxe(), client.mac) {
                    self.shared.mark_chained(mac, now);
                }
                match file {
                    BootFile::UbootScript => self.uboot_script(),
                    f => self.bootloader(*f),
                }
            }
            Outcome::IpxeScript => render::ipxe_entry(&self.shared.server())
                .map(|s| Content::Bytes(s.into_bytes().into()))
                .map_err(|e| TftpError::undefined(e.to_string())),
            _ => Err(TftpError::access_violation("not served to this machine")),
        }
    }

    fn bootloader(&self, file: BootFile) -> Result<Content, TftpError> {
        let dir = self.bootloaders.as_ref().ok_or_else(TftpError::not_found)?;
        let name = file.file_name();
        if file.is_grub() {
            // Our address goes into the image (see render::grub_image).
            let path = files::resolve(dir, name).map_err(|_| TftpError::not_found())?;
            let bytes =
                self.grub_images.get(&path, name, self.shared.server().address).map_err(|_| TftpError::not_found())?;
            return Ok(Content::Bytes(bytes));
        }
        let (file, len) = files::open(dir, name).map_err(|_| TftpError::not_found())?;
        Ok(Content::File { file, len })
    }

    fn uboot_script(&self) -> Result<Content, TftpError> {
        render::uboot_script().map(|b| Content::Bytes(b.into())).map_err(|e| TftpError::undefined(e.to_string()))
    }
}

use appliance_core::log_text::escaped;

fn log(req: &ReadRequest, d: &Decision, what: &str) {
    let mac = d.machine.mac.map(|m| m.to_string()).unwrap_or_else(|| "-".into());
    info!(
        target: "appliance::tftp",
        mac = %mac,
        peer = %req.peer,
        path = %escaped(&req.path),
        outcome = ?d.outcome,
        target_rule = %d.target_rule,
        arch_rule = %d.arch_rule,
        "tftp {what}"
    );
}

impl Handler for TftpRoutes {
    fn read(&self, req: &ReadRequest) -> Result<Content, TftpError> {
        match classify_tftp(&req.path) {
            TftpRequest::Pxelinux(f) => self.rendered(req, &f, Stage::Pxelinux, Format::Pxelinux),
            TftpRequest::GrubConfig(f) => self.rendered(req, &f, Stage::Grub, Format::Grub),
            // GRUB looks for module lists it already has; answer at once so it does not stall.
            TftpRequest::GrubAux { .. } => Err(TftpError::not_found()),
            TftpRequest::UbootScript => self.uboot_script(),
            TftpRequest::IpxeEntry => render::ipxe_entry(&self.shared.server())
                .map(|s| Content::Bytes(s.into_bytes().into()))
                .map_err(|e| TftpError::undefined(e.to_string())),
            TftpRequest::Artifact { profile, version, file } => {
                let (f, meta) =
                    artifacts::open(&self.store, &profile, &version, &file).map_err(|_| TftpError::not_found())?;
                self.touches.touch(&profile, &version, SystemTime::now());
                Ok(Content::File { file: f, len: meta.len() })
            }
            TftpRequest::Other(name) => match BootFile::from_file_name(&name) {
                Some(BootFile::UbootScript) => self.uboot_script(),
                Some(b) => self.boot_file(req, b),
                None => {
                    let root = self.root.as_ref().ok_or_else(TftpError::not_found)?;
                    match files::open(root, &name) {
                        Ok((file, len)) => Ok(Content::File { file, len }),
                        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                            Err(TftpError::access_violation("outside the served root"))
                        }
                        Err(_) => Err(TftpError::not_found()),
                    }
                }
            },
        }
    }

    fn finished(&self, report: &TransferReport) {
        // Artifacts are touched again at the end, so a long transfer keeps its version alive.
        if let TftpRequest::Artifact { profile, version, .. } = classify_tftp(&report.path) {
            self.touches.touch(&profile, &version, SystemTime::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use appliance_core::explain::{client_from_query, Query};
    use appliance_core::mac::MacAddr;
    use std::io::Read;

    struct Fixture {
        routes: TftpRoutes,
        _dirs: (tempfile::TempDir, tempfile::TempDir),
    }

    fn fixture(mode: DhcpMode) -> Fixture {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/data/config");
        let catalog = crate::config_dir::load(&dir, None).unwrap();
        let server = appliance_core::render::ServerInfo::from_catalog(&catalog);
        let shared = Shared::new(Arc::new(catalog), server);
        let boot = tempfile::tempdir().unwrap();
        for name in ["undionly.kpxe", "ipxe.efi", "snponly.efi", "grubnetaa64.efi"] {
            std::fs::write(boot.path().join(name), format!("bytes of {name}")).unwrap();
        }
        let store = tempfile::tempdir().unwrap();
        let routes = TftpRoutes {
            shared,
            store: store.path().to_path_buf(),
            bootloaders: Some(boot.path().to_path_buf()),
            root: None,
            touches: Arc::new(Touches::new()),
            mode: Some(mode),
            grub_images: Default::default(),
        };
        Fixture { routes, _dirs: (boot, store) }
    }

    /// The site's DHCP names `undionly.kpxe` for everyone; we overheard this client's DISCOVER.
    fn fixed_boot_file(f: &Fixture, mac: &str, ip: [u8; 4], q: Query) -> String {
        let mac = MacAddr::parse(mac).unwrap();
        let client = client_from_query(&Query { mac: Some(mac), ..q });
        f.routes.shared.remember_dhcp(&client, Instant::now());
        f.routes.shared.remember_ip(mac, Ipv4Addr::from(ip));
        let req = ReadRequest {
            path: "undionly.kpxe".into(),
            peer: (Ipv4Addr::from(ip), 2000).into(),
            local: "10.0.0.1:69".parse().unwrap(),
        };
        match f.routes.read(&req) {
            Ok(Content::Bytes(b)) => String::from_utf8_lossy(&b).into_owned(),
            Ok(Content::File { mut file, .. }) => {
                let mut s = String::new();
                file.read_to_string(&mut s).unwrap();
                s
            }
            Err(e) => format!("error {}", e.code),
        }
    }

    fn q(arch: u16, vendor: &str, user: Option<&str>) -> Query {
        Query {
            client_arch: Some(arch),
            vendor_class: Some(vendor.into()),
            user_class: user.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn off_mode_serves_each_firmware_its_binary_under_the_one_fixed_name() {
        let f = fixture(DhcpMode::Off);
        let uefi =
            fixed_boot_file(&f, "52:54:00:00:00:03", [10, 0, 0, 103], q(7, "PXEClient:Arch:00007:UNDI:003000", None));
        assert_eq!(uefi, "bytes of ipxe.efi");
        let bios =
            fixed_boot_file(&f, "52:54:00:00:00:01", [10, 0, 0, 101], q(0, "PXEClient:Arch:00000:UNDI:002001", None));
        assert_eq!(bios, "bytes of undionly.kpxe");
        let ipxe = fixed_boot_file(
            &f,
            "52:54:00:00:00:09",
            [10, 0, 0, 109],
            q(0, "PXEClient:Arch:00000:UNDI:002001", Some("iPXE")),
        );
        assert!(ipxe.starts_with("#!ipxe"), "{ipxe}");
        let arm =
            fixed_boot_file(&f, "52:54:00:00:00:05", [10, 0, 0, 105], q(11, "PXEClient:Arch:00011:UNDI:003000", None));
        assert_eq!(arm, "bytes of grubnetaa64.efi");
    }

    #[test]
    fn server_mode_serves_the_named_file() {
        let f = fixture(DhcpMode::Server);
        let uefi =
            fixed_boot_file(&f, "52:54:00:00:00:03", [10, 0, 0, 103], q(7, "PXEClient:Arch:00007:UNDI:003000", None));
        assert_eq!(uefi, "bytes of undionly.kpxe");
    }
}
